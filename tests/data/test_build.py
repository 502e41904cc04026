import json

import pytest

from vlmkit.cli import main
from vlmkit.data.shard_source import ShardSource


def test_data_synth_and_build_through_the_vlmkit_command(tmp_path, capsys):
    main(["data", "synth", "--format", "interleaved", "--num", "7", "--output", str(tmp_path / "raw")])
    main(["data", "build", "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "shards"),
          "--format", "interleaved", "--max-samples-per-shard", "3"])  # fmt: skip
    assert "wrote 7 interleaved samples in 3 shards" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert [s["num_samples"] for s in manifest["shards"]] == [3, 3, 1] and manifest["format"] == "interleaved"
    records = list(ShardSource(str(tmp_path / "shards"), "interleaved").records(0, 1, 0, endless=False))
    assert len(records) == 7 and all(r.images for r in records)


def test_strict_build_fails_on_skipped_samples(tmp_path):
    main(["data", "synth", "--format", "pdf", "--num", "2", "--output", str(tmp_path)])
    with (tmp_path / "data.jsonl").open("a") as lines:
        lines.write('{"images": ["images/nowhere.png"], "text": "x"}\n')
    args = ["data", "build", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--format", "pdf"]
    main(args)  # lenient: skipped and counted
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"] == {"missing_image": 1}
    with pytest.raises(SystemExit, match="missing_image"):
        main([*args, "--strict"])
    with pytest.raises(SystemExit):
        main(["data", "build", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--format", "video"])


@pytest.mark.integration
def test_few_step_fit_on_shards_through_the_cli(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for format in ("interleaved", "pair"):
        main(["data", "synth", "--format", format, "--num", "16", "--output", str(tmp_path / "raw" / format)])
        main(["data", "build", "--input", str(tmp_path / "raw" / format), "--output", str(tmp_path / format),
              "--format", format, "--max-samples-per-shard", "4"])  # fmt: skip
    sources = [
        {"class_path": "vlmkit.data.ShardSource",
         "init_args": {"urls": str(tmp_path / f), "format": f, "max_length": 192, "max_image_size": 32,
                       "min_image_size": 16, "shuffle_buffer": 4}}
        for f in ("interleaved", "pair")
    ]  # fmt: skip
    from vlmkit.cli import build_cli

    cli = build_cli(
        [
            "fit",
            "--config",
            "recipes/pretrain/tiny_stage1.yaml",
            f"--data.init_args.sources={json.dumps(sources)}",
            "--data.init_args.val_sources=null",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
            "--data.init_args.log_every_n_batches=1",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=0",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
            "--trainer.callbacks=[]",
        ]  # fmt: skip
    )
    assert cli.trainer.global_step == 3
    events = EventAccumulator(cli.trainer.log_dir).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "data/interleaved/ok", "data/pair/share", "data/bad_fraction"} <= tags


def test_a_5000_character_image_path_is_skipped_and_the_build_goes_on(tmp_path, capsys):
    main(["data", "synth", "--format", "pdf", "--num", "3", "--output", str(tmp_path)])
    with (tmp_path / "data.jsonl").open("a") as lines:
        lines.write(json.dumps({"images": ["x" * 5000 + ".png"], "text": "x"}) + "\n")
    main(["data", "build", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--format", "pdf"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_samples"] == 3 and manifest["skipped"] == {"missing_image": 1}
    assert "wrote 3 pdf samples" in capsys.readouterr().out


def test_strict_leaves_nothing_behind_and_keeps_an_earlier_build(tmp_path):
    main(["data", "synth", "--format", "pdf", "--num", "4", "--output", str(tmp_path / "raw")])
    args = ["data", "build", "--input", str(tmp_path / "raw"), "--format", "pdf", "--max-samples-per-shard", "2"]
    main([*args, "--output", str(tmp_path / "kept")])  # a good earlier build
    before = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    with (tmp_path / "raw" / "data.jsonl").open("a") as lines:
        lines.write('{"images": ["images/nowhere.png"], "text": "x"}\n')
    for output in ("new", "kept"):
        expected = rf"--strict: 1 input samples were skipped.*nothing was written to .*{output}"
        with pytest.raises(SystemExit, match=expected):
            main([*args, "--output", str(tmp_path / output), "--strict"])
    assert not (tmp_path / "new").exists()  # no shards, no manifest
    assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "raw"]  # no partial build left over
    main([*args, "--output", str(tmp_path / "kept"), "--max-samples-per-shard", "10"])  # a rebuild replaces it
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["manifest.json", "shard-000000.tar"]


def test_a_jpeg_with_exif_that_is_not_tiff_is_skipped_by_the_build(tmp_path):
    from hostile_images import EXIF_NOT_TIFF
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "bad.jpg", exif=EXIF_NOT_TIFF, dpi=(72, 72))
    (tmp_path / "data.jsonl").write_text(json.dumps({"images": ["bad.jpg"], "text": "x"}) + "\n")
    main(["data", "build", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--format", "pdf"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"] == {"corrupt_image": 1}
