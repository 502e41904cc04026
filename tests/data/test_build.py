import json

import pytest

from vlmkit.cli import main
from vlmkit.data.webdataset_source import ShardSource


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
