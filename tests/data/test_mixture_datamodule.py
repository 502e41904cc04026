import hashlib
import json
import random
import types

import lightning as L
import pytest
import torch

from vlmkit.data.mixture_datamodule import MixtureDataModule
from vlmkit.data.shard_source import ShardSource
from vlmkit.data.shards import ShardItem, write_shards
from vlmkit.data.synthetic_sources import SyntheticSource, synthetic_record
from vlmkit.training import VLMModule


def datamodule(shard_dirs, vlm, **kwargs):
    sources = [
        ShardSource(str(shard_dirs["pair"]), "pair", weight=0.6, max_length=96, max_image_size=32, min_image_size=16,
                    shuffle_buffer=8),
        ShardSource(str(shard_dirs["conversation"]), "conversation", weight=0.4, max_length=96, max_image_size=32,
                    min_image_size=16, shuffle_buffer=8),
    ]  # fmt: skip
    dm = MixtureDataModule(sources, batch_size=2, **kwargs)
    dm.connect(vlm)
    return dm


def digest(batch):
    return hashlib.sha1(batch["input_ids"].numpy().tobytes() + batch["labels"].numpy().tobytes()).hexdigest()


def take(iterator, n):
    return [digest(next(iterator)) for _ in range(n)]


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.integration)])
def test_stateful_loader_resumes_exactly(shard_dirs, tiny_vlm, num_workers):
    dm = datamodule(shard_dirs, tiny_vlm, num_workers=num_workers, pack_length=192)
    loader = dm.train_dataloader()
    iterator = iter(loader)
    take(iterator, 3)
    state = loader.state_dict()
    expected = take(iterator, 4)  # crosses the end of a pass of the pair shards
    resumed = datamodule(shard_dirs, tiny_vlm, num_workers=num_workers, pack_length=192).train_dataloader()
    resumed.load_state_dict(state)
    assert take(iter(resumed), 4) == expected
    fresh = take(iter(datamodule(shard_dirs, tiny_vlm, num_workers=num_workers, pack_length=192).train_dataloader()), 7)
    assert fresh[3:] == expected  # and it is the same stream as an uninterrupted run


def test_batches_fit_the_model_packed_and_unpacked(shard_dirs, tiny_vlm):
    for pack_length in (None, 192):
        batch = next(iter(datamodule(shard_dirs, tiny_vlm, pack_length=pack_length).train_dataloader()))
        assert ("segment_ids" in batch) == (pack_length is not None)
        with torch.no_grad():
            logits = VLMModule(tiny_vlm)(batch).logits
        assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_default_sources_are_synthetic_and_val_reads_once(tiny_vlm):
    dm = MixtureDataModule(val_sources=[SyntheticSource("pdf", max_length=128, num_samples=5)], batch_size=2)
    dm.connect(tiny_vlm)
    assert [s.name for s in dm.sources] == ["synthetic_pair", "synthetic_pdf", "synthetic_interleaved",
                                            "synthetic_conversation"]  # fmt: skip
    assert sum(b["input_ids"].shape[0] for b in dm.val_dataloader()) == 5
    assert dm.val_stats.totals() == {"synthetic_pdf/ok": 5}


def test_image_splitting_is_set_per_source_and_batches_fit_the_model(shard_dirs, tiny_vlm):
    sizes = {"max_length": 192, "max_image_size": 32, "min_image_size": 16}
    pairs = ShardSource(str(shard_dirs["pair"]), "pair", shuffle_buffer=8, **sizes)
    chats = ShardSource(str(shard_dirs["conversation"]), "conversation", shuffle_buffer=8, image_splitting=1.0, **sizes)
    val = SyntheticSource("conversation", num_samples=4, eval_image_splitting=True, **sizes)
    dm = MixtureDataModule([pairs, chats], val_sources=[val], batch_size=2, pack_length=192, crop_markers=False)
    dm.connect(tiny_vlm)
    chat = next(r for r in chats.records(0, 1, 0, endless=False) if r.images)
    pair = next(iter(pairs.records(0, 1, 0, endless=False)))
    assert len(dm.renderer(chats, train=True)(chat, random.Random(0))["pixel_values"]) == 5  # 4 crops + the image
    assert len(dm.renderer(pairs, train=True)(pair, random.Random(0))["pixel_values"]) == 1  # pretraining: unsplit
    assert len(dm.renderer(chats, train=False)(chat)["pixel_values"]) == 1  # evaluation: eval_image_splitting
    text = tiny_vlm.tokenizer.decode(dm.renderer(chats, train=True)(chat, random.Random(0))["input_ids"])
    assert "<row_" not in text and "<global-img>" not in text  # crop_markers=False: Idefics2's layout
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        assert torch.isfinite(VLMModule(tiny_vlm)(batch).logits).all()
    val_images = sum(len(synthetic_record("conversation", 0, i).images) for i in range(4))
    assert sum(b["pixel_values"].shape[0] for b in dm.val_dataloader() if "pixel_values" in b) == 5 * val_images


def test_too_many_bad_samples_stop_the_run_with_the_counts(tmp_path, tiny_vlm):
    items = [ShardItem(f"k{i}", {"images": ["0.png"], "text": "x"}, [("0.png", b"broken")]) for i in range(20)]
    write_shards(items, tmp_path, "pdf")
    dm = MixtureDataModule([ShardSource(str(tmp_path), "pdf", shuffle_buffer=0), SyntheticSource("pair")],
                           batch_size=4, max_bad_fraction=0.2, min_samples_for_bad_fraction=20)  # fmt: skip
    dm.connect(tiny_vlm)
    dm.trainer = types.SimpleNamespace(training=True, loggers=[], global_step=0, train_dataloader=None)
    iterator = iter(dm.train_dataloader())
    with pytest.raises(RuntimeError, match=r"max_bad_fraction=0.2(.|\n)*corrupt_image"):
        for _ in range(20):
            dm.on_before_batch_transfer(next(iterator), 0)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="unique"):
        MixtureDataModule([SyntheticSource("pdf"), SyntheticSource("pdf")])
    with pytest.raises(ValueError, match="pack_length"):
        MixtureDataModule([SyntheticSource("pdf", max_length=512)], pack_length=256)
    with pytest.raises(ValueError, match="min_image_size=64 exceeds max_image_size=32"):
        ShardSource("shards/shard-{0..3}.tar", "pdf", max_image_size=32, min_image_size=64)
    assert ShardSource("shards/shard-{0..3}.tar", "pdf", max_image_size=64).min_image_size == 64  # 378, capped
    for source in (ShardSource, SyntheticSource):
        args = ("shards/shard-{0..3}.tar", "pdf") if source is ShardSource else ("pdf",)
        with pytest.raises(ValueError, match="image_splitting must be in"):
            source(*args, image_splitting=-0.1)


class Recorder(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append(digest(batch))


@pytest.mark.integration
@pytest.mark.parametrize("num_workers", [0, 2])
def test_checkpoint_resume_continues_the_data_stream(shard_dirs, tmp_path, num_workers):
    from tiny_models import build_tiny_vlm

    def run(max_steps, ckpt_path=None):
        recorder = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=2, save_top_k=-1)
        seen = Recorder()
        trainer = L.Trainer(max_steps=max_steps, callbacks=[seen, recorder], logger=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu")  # fmt: skip
        vlm = build_tiny_vlm()
        trainer.fit(
            VLMModule(vlm),
            datamodule=datamodule(shard_dirs, vlm, pack_length=192, num_workers=num_workers),
            ckpt_path=ckpt_path,  # read with weights_only=True: the checkpoint holds no pickled callable
        )
        return seen.seen

    full = run(5)
    resumed = run(5, ckpt_path=str(tmp_path / "epoch=0-step=2.ckpt"))
    assert resumed == full[2:]


def _source_with_one_bad_shard(tmp_path, shard_dirs, kind):
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "missing":  # the manifest lists one shard, which is not on disk
        manifest = {"format": "pdf", "num_samples": 6, "skipped": {},
                    "shards": [{"name": "shard-000000.tar", "num_samples": 6, "num_bytes": 10240}]}  # fmt: skip
        (folder / "manifest.json").write_text(json.dumps(manifest))
        urls = str(folder)
    else:  # a valid tar without a sample
        import tarfile

        with tarfile.open(folder / "empty.tar", "w"):
            pass
        urls = str(folder / "empty.tar")
    return ShardSource(urls, "pdf", max_length=96, max_image_size=32, min_image_size=16, shuffle_buffer=4)


@pytest.mark.timeout(120)  # before: a hang (one source) or an endless stream of warnings (with a good source)
@pytest.mark.parametrize("kind, alone", [("missing", True), ("empty", False)])
def test_a_source_whose_shards_yield_nothing_stops_training_naming_it(shard_dirs, tmp_path, tiny_vlm, kind, alone):
    from vlmkit.data.mixture import EmptySourceError

    good = ShardSource(str(shard_dirs["pair"]), "pair", max_length=96, max_image_size=32, min_image_size=16)
    dead = _source_with_one_bad_shard(tmp_path, shard_dirs, kind)
    dm = MixtureDataModule([dead] if alone else [good, dead], batch_size=2)
    dm.connect(tiny_vlm)
    shard = "shard-000000.tar" if kind == "missing" else "empty.tar"
    reason = "missing_shard" if kind == "missing" else "empty_shard"
    iterator = iter(dm.train_dataloader())
    with pytest.raises(EmptySourceError, match=rf"source 'pdf' gave no usable sample .*{shard}.*{reason}: 1"):
        for _ in range(1000):
            next(iterator)


@pytest.mark.parametrize("saved, resumed", [(0, 2), (2, 1)])
def test_resuming_with_another_num_workers_says_what_differs_and_what_to_pass(shard_dirs, tiny_vlm, saved, resumed):
    from vlmkit.data.mixture_datamodule import DataResumeError

    loader = datamodule(shard_dirs, tiny_vlm, num_workers=saved).train_dataloader()
    iterator = iter(loader)
    take(iterator, 2)
    state = loader.state_dict()
    del iterator
    other = datamodule(shard_dirs, tiny_vlm, num_workers=resumed).train_dataloader()
    expected = rf"ran num_workers={saved}, this run has num_workers={resumed}.*--data.init_args.num_workers={saved}"
    with pytest.raises(DataResumeError, match=expected):  # before: torchdata's bare AssertionError
        other.load_state_dict(state)
        next(iter(other))
    same = datamodule(shard_dirs, tiny_vlm, num_workers=saved).train_dataloader()
    same.load_state_dict(state)  # the same number still resumes


def test_the_data_report_header_names_the_data_not_the_trainer_stage(caplog):
    """The report printed at teardown says "training data", not ``training data (TrainerFn.FITTING)``."""
    import logging

    from lightning.pytorch.trainer.states import TrainerFn

    stats = types.SimpleNamespace(totals=lambda: {"used": 1}, report=lambda: "source  used\nsynthetic  1")
    module = types.SimpleNamespace(train_stats=stats, val_stats=None, log_counts=lambda: None)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        MixtureDataModule.teardown(module, TrainerFn.FITTING)
    assert "\ntraining data:\nsource  used" in caplog.text and "TrainerFn" not in caplog.text
