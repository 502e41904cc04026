import functools

import pytest
from tiny_models import build_tiny_vlm

from vlmkit.cli.report import main
from vlmkit.connectors import PerceiverResampler
from vlmkit.fusion import CrossAttentionFusion
from vlmkit.report import model_report

CONNECTOR = functools.partial(
    PerceiverResampler, num_latents=4, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
)


def test_parameters_per_part_add_up_and_follow_trainability():
    vlm = build_tiny_vlm(connector=CONNECTOR, train_vision_encoder="frozen", train_language_model="full")
    report = model_report(vlm, text_length=16, num_images=1, image_size=(16, 16))
    parts = {k: v for k, v in report.parameters.items() if k != "total"}
    assert sum(total for total, _ in parts.values()) == report.parameters["total"][0]
    assert parts["vision_encoder"][1] == 0 and parts["language_model"][1] == parts["language_model"][0]
    assert report.sequence_length == 16 + 4 + 2  # text + 4 latents + 2 fake tokens


def test_flops_grow_with_text_and_images_and_cross_attention_costs_more():
    fa = build_tiny_vlm(connector=CONNECTOR)
    ca = build_tiny_vlm(connector=CONNECTOR, fusion=CrossAttentionFusion(every_n_layers=1, num_heads=4))
    short, long = (model_report(fa, n, 1, (16, 16)).forward_flops for n in (16, 64))
    assert long > short > 0
    assert model_report(fa, 16, 2, (16, 16)).forward_flops > short
    fa_report, ca_report = model_report(fa, 32, 1, (16, 16)), model_report(ca, 32, 1, (16, 16))
    assert ca_report.parameters["fusion"][0] > 0 == fa_report.parameters["fusion"][0]
    assert ca_report.sequence_length == 32 + 3  # one marker between two fake tokens


@pytest.mark.integration
def test_cli_prints_the_table(capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    main(
        ["--text-length", "8", "--config", "recipes/quickstart.yaml", "--config", "recipes/fusion/cross_attention.yaml"]
    )
    out = capsys.readouterr().out
    assert "| fusion |" in out and "forward GFLOPs" in out
