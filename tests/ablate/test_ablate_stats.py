import math

import pytest

from vlmkit.ablate.stats import paired, summarize, verdict


def test_summary_is_mean_and_sample_std_of_finite_values():
    summary = summarize([0.5, 0.7, float("nan"), 0.6])
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.6)
    assert summary.std == pytest.approx(0.1)  # sample std (n - 1)
    assert summary.format() == "0.600 ± 0.100 (3)"
    assert summarize([0.4]).format() == "0.400 (1)"
    assert summarize([]).format() == "–" and math.isnan(summarize([]).mean)


def test_paired_differences_use_only_seeds_where_both_finished():
    difference = paired({0: 0.7, 1: 0.8, 2: float("nan"), 3: 0.9}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert difference.differences == pytest.approx({0: 0.2, 1: 0.3})
    assert difference.summary.n == 2
    assert difference.standard_error == pytest.approx(difference.summary.std / math.sqrt(2))


@pytest.mark.parametrize(
    ("arm", "reference", "expect", "higher_is_better", "expected"),
    [
        ({0: 0.62, 1: 0.64, 2: 0.63}, {0: 0.50, 1: 0.51, 2: 0.52}, "better", True, "agrees"),
        ({0: 0.62, 1: 0.64, 2: 0.63}, {0: 0.50, 1: 0.51, 2: 0.52}, "worse", True, "disagrees"),
        # lower is better (e.g. divergence counts): fewer is "better"
        ({0: 0.0, 1: 1.0, 2: 0.0}, {0: 4.0, 1: 5.0, 2: 6.0}, "better", False, "agrees"),
        # one seed goes the other way: inconclusive whatever the mean
        ({0: 0.70, 1: 0.70, 2: 0.49}, {0: 0.50, 1: 0.50, 2: 0.50}, "better", True, "inconclusive"),
        # same sign but a mean within 2 standard errors
        ({0: 0.51, 1: 0.60, 2: 0.501}, {0: 0.50, 1: 0.50, 2: 0.50}, "better", True, "inconclusive"),
        # a single paired seed can never be judged
        ({0: 0.9}, {0: 0.1}, "better", True, "inconclusive"),
    ],
)
def test_verdict_for_directional_expectations(arm, reference, expect, higher_is_better, expected):
    assert verdict(paired(arm, reference), expect, higher_is_better) == expected


def test_verdict_for_expected_similarity_is_an_equivalence_band():
    reference = {0: 0.50, 1: 0.52, 2: 0.51}
    # differences +0.004, -0.002, +0.001: mean ± 2 se lies within ±0.02
    assert verdict(paired({0: 0.504, 1: 0.518, 2: 0.511}, reference), "similar", True, 0.02) == "agrees"
    # a clear difference of about 0.1, far beyond the ±0.02 band
    assert verdict(paired({0: 0.60, 1: 0.63, 2: 0.61}, reference), "similar", True, 0.02) == "disagrees"
    # noisy: the band is neither inside nor clearly outside ±0.02
    assert verdict(paired({0: 0.56, 1: 0.49, 2: 0.55}, reference), "similar", True, 0.02) == "inconclusive"
    # identical runs agree exactly
    assert verdict(paired(reference, reference), "similar", True, 0.02) == "agrees"
