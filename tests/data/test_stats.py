from vlmkit.data.stats import DataStats


def test_counts_per_reader_sum_and_report():
    stats = DataStats(["a", "b"], num_readers=2)
    stats.add(0, "a", "ok", 3)
    stats.add(1, "a", "ok")
    stats.add(1, "b", "ok", 4)
    stats.add(0, "b", "corrupt_image")
    stats.add(1, "b", "dropped_images", 2)
    stats.add(0, "a", "some_new_reason")  # unknown reasons are not lost
    assert stats.totals() == {"a/ok": 4, "a/render_error": 1, "b/ok": 4, "b/corrupt_image": 1, "b/dropped_images": 2}
    assert stats.proportions() == {"a": 0.5, "b": 0.5}
    assert stats.bad_fraction() == (2 / 10, 10)
    report = stats.report().splitlines()
    assert report[2].split()[:4] == ["b", "4", "0.500", "2"] and "corrupt_image: 1" in report[2]
    assert stats.counts.is_shared()
