r"""Toy unimodal pretraining: the backbones the ablations start from, as the paper starts from Mistral and SigLIP.

From random init, "frozen backbones" mean nothing (paper section 3.2 freezes *pretrained* ones). ``vlmkit ablate
--prepare`` builds two small backbones of the synthetic world, deterministically from a seed, with Lightning:

- a Mistral-style LM trained on the world's text: conversations in the VLM's own chat layout where a textual
  description of the scene stands where the image will be ("User:a red circle on the left. What color is the
  circle?<end_of_utterance>\\nAssistant: red"), captions, rendered words and PDF-like lines. It learns to answer
  from its context, which is what a VLM's connector must then feed it;
- a SigLIP-style vision encoder pretrained on fixed-size *square* images (as SigLIP) to recognise what the questions
  ask about: a linear head per patch names the colour and shape of the object under it (or background), and linear
  heads on the mean-pooled features say which colours lie left or right, count the shapes and name the written word.

Each is saved with ``save_pretrained`` (``lm``, ``vision``) and, for the backbone-quality ablation (paper Tables 1
and 2), also a snapshot after a quarter of its steps (``lm_short``, ``vision_short``); ``manifest.json`` (written
last, atomically) records the settings and each backbone's held-out quality, and marks the folder complete.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vlmkit.data.collate import VLMCollator, pad_images
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.synthetic import COLORS, SHAPES, WORDS, make_sample, make_scene
from vlmkit.data.synthetic_sources import synthetic_record
from vlmkit.llm import TransformersCausalLM
from vlmkit.text.template import ChatTemplate, Turn
from vlmkit.training.module import answer_exact_match, answer_loss
from vlmkit.training.schedules import WarmupCosineSchedule
from vlmkit.vision import TransformersVisionEncoder

MANIFEST = "manifest.json"
BACKBONES = ("lm", "lm_short", "vision", "vision_short")

LM_CONFIG: dict[str, Any] = {
    "model_type": "mistral",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "vocab_size": 512,
}
VISION_CONFIG: dict[str, Any] = {
    "model_type": "siglip_vision_model",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "image_size": 48,  # pretrained on 48 x 48 squares: a 6 x 6 grid of learned positions
    "patch_size": 8,
    "vision_use_head": False,  # no SigLIP pooling head (vlmkit uses patch features)
}


@dataclass
class PretrainSettings:
    """What ``prepare_backbones`` builds (recorded in the manifest).

    Attributes:
        seed: Seed of the data and of the initialisation.
        lm_steps: Optimizer steps of the LM (``lm``); ``lm_short`` is the snapshot after ``short_fraction`` of them.
        vision_steps: Optimizer steps of the vision encoder.
        short_fraction: When the ``*_short`` snapshots are taken (paper Tables 1/2: a weaker backbone of the
            same size).
        batch_size: Samples per step.
        lr: Peak learning rate (AdamW, linear warmup over 5% of the steps, then cosine decay to 5% of it; the
            short snapshot is taken mid-schedule: the same run, less trained).
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        min_size: Smallest side of the generated images.
        max_size: Largest side of the generated images.
        eval_samples: Held-out samples for the quality numbers of the manifest.
        lm_config: The LM's transformers config.
        vision_config: The vision encoder's transformers config (``image_size`` is its square pretraining size).
        accelerator: Lightning accelerator.
    """

    seed: int = 0
    lm_steps: int = 1000
    vision_steps: int = 1000
    short_fraction: float = 0.25
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    min_size: int = 32
    max_size: int = 48
    eval_samples: int = 256
    lm_config: dict[str, Any] = field(default_factory=lambda: dict(LM_CONFIG))
    vision_config: dict[str, Any] = field(default_factory=lambda: dict(VISION_CONFIG))
    accelerator: str = "cpu"

    @classmethod
    def smoke(cls) -> PretrainSettings:
        """A few steps of the same backbones (for ``vlmkit ablate --smoke`` and the tests)."""
        return cls(lm_steps=4, vision_steps=4, batch_size=4, eval_samples=8)


# ---------------------------------------------------------------------------------------------------- text


def describe(sample_objects: tuple[tuple[str, str, tuple[int, int, int, int]], ...], width: int) -> str:
    """A textual stand-in for an image: its objects left to right with their side, e.g. "a red circle on the left"."""
    ordered = sorted(sample_objects, key=lambda o: (o[2][0] + o[2][2], o[2]))
    parts = []
    for kind, color, box in ordered:
        side = "left" if (box[0] + box[2]) / 2 < width / 2 else "right"
        parts.append(f"{'an' if color[0] in 'aeiou' else 'a'} {color} {kind} on the {side}")
    return (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]) + "."


def text_document(seed: int, index: int, min_size: int = 32, max_size: int = 64) -> list[Turn]:
    """Document ``index`` of the LM's pretraining text: a described-scene conversation, a caption or PDF lines."""
    rng = random.Random(f"vlmkit.ablate.text:{seed}:{index}")
    kind = rng.random()
    if kind < 0.1:  # PDF-like lines of words
        return [Turn("text", [synthetic_record("pdf", seed, index).data["text"] + "\n"])]
    if kind < 0.25:  # reading: the word as text, then the question
        sample = make_sample(seed, index, "reading", min_size, max_size)
        return [
            Turn("user", [f"{sample.caption} {sample.question}"]),
            Turn("assistant", [sample.answer]),
        ]
    task = rng.choice(("color", "shape", "count", "position", "caption"))
    sample, objects = make_scene(seed, index, task, min_size, max_size, max_shapes=rng.randint(1, 3))
    context = describe(objects, sample.image.width)
    return [Turn("user", [f"{context} {sample.question}"]), Turn("assistant", [sample.answer])]


class TextDocuments(Dataset):
    """``num`` rendered documents (ids, labels on every token) of seed ``seed``."""

    def __init__(self, tokenizer, num: int, seed: int, answer_only: bool = False) -> None:
        self.template = ChatTemplate(tokenizer, train_on="assistant" if answer_only else "all")
        self.num, self.seed = num, seed

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict[str, Any]:
        encoded = self.template.encode(text_document(self.seed, index), [])
        return {
            "input_ids": torch.tensor(encoded.input_ids),
            "labels": torch.tensor(encoded.labels),
            "pixel_values": [],
        }


class TextPretraining(L.LightningModule):
    """Next-token prediction on the world's text (every token trained)."""

    def __init__(self, lm: TransformersCausalLM, lr: float, total_steps: int, min_lr_ratio: float = 0.05) -> None:
        super().__init__()
        self.lm, self.lr, self.total_steps, self.min_lr_ratio = lm, lr, total_steps, min_lr_ratio

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Next-token loss over every labelled token."""
        embeds = self.lm.get_input_embeddings()(batch["input_ids"])  # [b, s, d]
        logits = self.lm(embeds, batch["attention_mask"]).logits  # [b, s, vocab]
        loss = answer_loss(logits, batch["labels"])
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        """AdamW, linear warmup over 5% of the steps, then cosine decay to ``min_lr_ratio`` of the peak."""
        return _adamw_warmup_cosine(self, self.lr, self.total_steps, self.min_lr_ratio)


def _adamw_warmup_cosine(module: nn.Module, lr: float, total_steps: int, min_lr_ratio: float) -> dict[str, Any]:
    """AdamW over ``module``, linear warmup over 5% of ``total_steps``, then cosine decay (both pretrainings)."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.01)
    schedule = WarmupCosineSchedule(optimizer, max(1, total_steps // 20), total_steps, min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def lm_quality(lm: TransformersCausalLM, seed: int, num: int, batch_size: int) -> dict[str, float]:
    """Held-out next-token loss and exact-match accuracy of the answers (given the textual scene)."""
    lm.eval()
    tokenizer = lm.tokenizer
    collate = VLMCollator(tokenizer.pad_token_id, 1)
    losses, hits, answered = [], 0, 0
    for answer_only in (False, True):
        loader = DataLoader(TextDocuments(tokenizer, num, seed, answer_only), batch_size=batch_size, collate_fn=collate)
        for batch in loader:
            logits = lm(lm.get_input_embeddings()(batch["input_ids"]), batch["attention_mask"]).logits
            if answer_only:
                has_answer = (batch["labels"] != -100).any(-1)
                hits += int(answer_exact_match(logits, batch["labels"]).sum())
                answered += int(has_answer.sum())
            else:
                losses.append(float(answer_loss(logits, batch["labels"])))
    lm.train()
    return {"loss": sum(losses) / len(losses), "answer_accuracy": hits / max(1, answered)}


# ---------------------------------------------------------------------------------------------------- vision


NUM_OBJECT_CLASSES = 1 + len(COLORS) * len(SHAPES)  # background + every (colour, shape)
NUM_SIDES = 2 * len(COLORS)  # (colour, left/right half) presence


def side_labels(objects: tuple[tuple[str, str, tuple[int, int, int, int]], ...], width: int) -> torch.Tensor:
    """Multi-hot ``[12]``: which colours have an object centred in the left half, which in the right half."""
    sides = torch.zeros(NUM_SIDES)
    for _, color, box in objects:
        sides[2 * list(COLORS).index(color) + int((box[0] + box[2]) / 2 >= width / 2)] = 1.0
    return sides


def object_mask(
    objects: tuple[tuple[str, str, tuple[int, int, int, int]], ...], width: int, height: int
) -> Image.Image:
    """A label image (mode ``L``): 0 on the background, ``1 + colour * 3 + shape`` on each object's pixels."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for kind, color, box in objects:
        label = 1 + list(COLORS).index(color) * len(SHAPES) + SHAPES.index(kind)
        x0, y0, x1, y1 = box
        if kind == "circle":
            draw.ellipse(box, fill=label)
        elif kind == "square":
            draw.rectangle(box, fill=label)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=label)
    return mask


def patch_labels(mask: Image.Image, rows: int, cols: int) -> torch.Tensor:
    """The label at the centre of each of ``rows x cols`` patches (row-major) ``[rows * cols]``."""
    cells = mask.resize((cols, rows), Image.Resampling.NEAREST)
    return torch.tensor(list(cells.getdata()), dtype=torch.long)


class SceneImages(Dataset):
    """Square-resized synthetic images with dense labels.

    Every patch is labelled with the (colour, shape) of the object under its centre (or background), every image
    with the colours in its left and right halves and its number of shapes; 1 in 4 images is a rendered word,
    labelled by the word.
    """

    def __init__(self, processor: ImageProcessor, num: int, seed: int, min_size: int, max_size: int) -> None:
        self.processor, self.num, self.seed = processor, num, seed
        self.min_size, self.max_size = min_size, max_size
        self.side = processor.max_image_size // processor.patch_size

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index % 4 == 3:
            sample = make_sample(self.seed, index, "reading", self.min_size, self.max_size)
            return {
                "pixels": self.processor(sample.image),
                "patches": torch.full((self.side * self.side,), -100, dtype=torch.long),
                "sides": torch.full((NUM_SIDES,), -1.0),
                "count": -100,
                "word": WORDS.index(sample.answer),
            }
        sample, objects = make_scene(self.seed, index, "count", self.min_size, self.max_size, max_shapes=3)
        mask = object_mask(objects, sample.image.width, sample.image.height)
        return {
            "pixels": self.processor(sample.image),
            "patches": patch_labels(mask, self.side, self.side),
            "sides": side_labels(objects, sample.image.width),
            "count": len(objects) - 1,
            "word": -100,
        }


def collate_scenes(samples: list[dict[str, Any]], patch_size: int) -> dict[str, torch.Tensor]:
    """Stack the images (all the same square size) and labels."""
    pixels, patch_mask = pad_images([s["pixels"] for s in samples], patch_size)
    return {
        "pixel_values": pixels,
        "patch_mask": patch_mask,
        "patches": torch.stack([s["patches"] for s in samples]),
        "sides": torch.stack([s["sides"] for s in samples]),
        "count": torch.tensor([s["count"] for s in samples]),
        "word": torch.tensor([s["word"] for s in samples]),
    }


class ImagePretraining(L.LightningModule):
    """Linear heads on the encoder's patch features.

    Per patch: the (colour, shape) of the object under it, or background; on the mean-pooled features: which colours
    lie in the left or right half, the number of shapes and the written word.
    """

    def __init__(
        self, encoder: TransformersVisionEncoder, lr: float, total_steps: int, min_lr_ratio: float = 0.05
    ) -> None:
        super().__init__()
        self.encoder, self.lr, self.total_steps, self.min_lr_ratio = encoder, lr, total_steps, min_lr_ratio
        d = encoder.hidden_size
        self.heads = nn.ModuleDict(
            {
                "patches": nn.Linear(d, NUM_OBJECT_CLASSES),
                "sides": nn.Linear(d, NUM_SIDES),
                "count": nn.Linear(d, 3),
                "word": nn.Linear(d, len(WORDS)),
            }
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits of every head: ``patches [n, p, 19]``, ``sides [n, 12]``, ``count [n, 3]``, ``word [n, 30]``."""
        features = self.encoder(batch["pixel_values"], batch["patch_mask"])  # [n, p, d]
        pooled = features.mean(1)  # [n, d]
        return {
            "patches": self.heads["patches"](features),  # [n, p, classes]
            "sides": self.heads["sides"](pooled),
            "count": self.heads["count"](pooled),
            "word": self.heads["word"](pooled),
        }

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the heads' cross-entropies (unlabelled entries are ``-100``)."""
        loss = F.cross_entropy(out["patches"].flatten(0, 1), batch["patches"].flatten(), ignore_index=-100)
        scenes = batch["sides"][:, 0] >= 0  # word images have no sides
        if scenes.any():
            loss = loss + F.binary_cross_entropy_with_logits(out["sides"][scenes], batch["sides"][scenes])
        loss = loss + F.cross_entropy(out["count"], batch["count"], ignore_index=-100)
        return loss + F.cross_entropy(out["word"], batch["word"], ignore_index=-100)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The heads' loss."""
        loss = self.loss(self(batch), batch)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        """AdamW, linear warmup over 5% of the steps, then cosine decay to ``min_lr_ratio`` of the peak."""
        return _adamw_warmup_cosine(self, self.lr, self.total_steps, self.min_lr_ratio)


@torch.no_grad()
def vision_quality(module: ImagePretraining, loader: DataLoader) -> dict[str, float]:
    """Held-out accuracies: object patches (their colour and shape), all colour sides right, count, written word."""
    module.eval()
    hits = {"object_patch": 0, "sides": 0, "count": 0, "word": 0}
    totals = {"object_patch": 0, "sides": 0, "count": 0, "word": 0}
    for batch in loader:
        out = module(batch)
        objects = batch["patches"] > 0
        hits["object_patch"] += int((out["patches"].argmax(-1) == batch["patches"])[objects].sum())
        totals["object_patch"] += int(objects.sum())
        scenes = batch["sides"][:, 0] >= 0
        hits["sides"] += int(((out["sides"][scenes] > 0) == (batch["sides"][scenes] > 0.5)).all(-1).sum())
        totals["sides"] += int(scenes.sum())
        for key in ("count", "word"):
            labelled = batch[key] != -100
            hits[key] += int((out[key].argmax(-1) == batch[key])[labelled].sum())
            totals[key] += int(labelled.sum())
    module.train()
    result = {f"{k}_accuracy": hits[k] / max(1, totals[k]) for k in hits}
    result["mean_accuracy"] = sum(result.values()) / len(result)
    return result


# ---------------------------------------------------------------------------------------------------- building


class _Snapshot(L.Callback):
    """Keep a copy of ``module.<attribute>``'s weights after ``step`` optimizer steps."""

    def __init__(self, attribute: str, step: int) -> None:
        self.attribute, self.step = attribute, step
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.state is None:
            self.state = copy.deepcopy(getattr(pl_module, self.attribute).state_dict())


def _trainer(settings: PretrainSettings, steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        accelerator=settings.accelerator,
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=callbacks,
    )


def pretrain_language_model(settings: PretrainSettings, output: Path) -> dict[str, Any]:
    """Train the toy LM, save ``lm`` and ``lm_short`` under ``output``; return their held-out quality."""
    L.seed_everything(settings.seed, verbose=False)
    lm = TransformersCausalLM(config=settings.lm_config, tokenizer="synthetic")
    steps = settings.lm_steps
    short = _Snapshot("lm", max(1, round(steps * settings.short_fraction)))
    data = TextDocuments(lm.tokenizer, steps * settings.batch_size, settings.seed)
    loader = DataLoader(
        data, batch_size=settings.batch_size, shuffle=False, collate_fn=VLMCollator(lm.tokenizer.pad_token_id, 1)
    )
    module = TextPretraining(lm, settings.lr, steps, settings.min_lr_ratio)
    started = time.perf_counter()
    _trainer(settings, steps, [short]).fit(module, loader)
    seconds = time.perf_counter() - started
    held_out = settings.seed + 1_000_003  # documents never trained on
    report = {"lm": {"steps": steps, "seconds": round(seconds, 1)}}
    report["lm"].update(lm_quality(lm, held_out, settings.eval_samples, settings.batch_size))
    _save_lm(lm, output / "lm")
    lm.load_state_dict(short.state)
    report["lm_short"] = {"steps": short.step}
    report["lm_short"].update(lm_quality(lm, held_out, settings.eval_samples, settings.batch_size))
    _save_lm(lm, output / "lm_short")
    return report


def pretrain_vision_encoder(settings: PretrainSettings, output: Path) -> dict[str, Any]:
    """Train the toy vision encoder on square images, save ``vision`` and ``vision_short``; return their quality."""
    L.seed_everything(settings.seed, verbose=False)
    encoder = TransformersVisionEncoder(config=settings.vision_config, position_embedding="interpolate")
    side = settings.vision_config["image_size"]
    processor = ImageProcessor(
        encoder.patch_size, encoder.image_mean, encoder.image_std, side, side, resize_mode="square"
    )
    steps = settings.vision_steps

    def loader(num: int, seed: int) -> DataLoader:
        data = SceneImages(processor, num, seed, settings.min_size, settings.max_size)
        return DataLoader(
            data, batch_size=settings.batch_size, collate_fn=lambda s: collate_scenes(s, encoder.patch_size)
        )

    module = ImagePretraining(encoder, settings.lr, steps, settings.min_lr_ratio)
    short = _Snapshot("encoder", max(1, round(steps * settings.short_fraction)))
    started = time.perf_counter()
    _trainer(settings, steps, [short]).fit(module, loader(steps * settings.batch_size, settings.seed))
    seconds = time.perf_counter() - started
    held_out = loader(settings.eval_samples, settings.seed + 1_000_003)
    report = {"vision": {"steps": steps, "seconds": round(seconds, 1), **vision_quality(module, held_out)}}
    encoder.backbone.save_pretrained(output / "vision")
    encoder.load_state_dict(short.state)
    report["vision_short"] = {"steps": short.step, **vision_quality(module, held_out)}
    encoder.backbone.save_pretrained(output / "vision_short")
    return report


def _save_lm(lm: TransformersCausalLM, path: Path) -> None:
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)


def is_prepared(directory: str | Path) -> bool:
    """Whether ``directory`` holds a complete set of pretrained backbones (its manifest was written)."""
    return (Path(directory) / MANIFEST).is_file()


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory/.lock`` (several array tasks may try to prepare at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_backbones(
    directory: str | Path, settings: PretrainSettings | None = None, force: bool = False
) -> dict[str, Any]:
    """Build the toy pretrained backbones into ``directory`` unless they are there already.

    Safe to call from several processes at once: one builds, the others wait for its manifest.

    Args:
        directory: Where ``lm``, ``lm_short``, ``vision``, ``vision_short`` and ``manifest.json`` go.
        settings: What to build (default: :class:`PretrainSettings`).
        force: Rebuild even when a manifest exists.

    Returns:
        The manifest: settings, and per backbone its steps and held-out quality.
    """
    directory = Path(directory)
    settings = settings or PretrainSettings()
    with _locked(directory):
        if is_prepared(directory) and not force:
            return json.loads((directory / MANIFEST).read_text())
        (directory / MANIFEST).unlink(missing_ok=True)
        started = time.perf_counter()
        report: dict[str, Any] = {"settings": asdict(settings)}
        report.update(pretrain_language_model(settings, directory))
        report.update(pretrain_vision_encoder(settings, directory))
        report["seconds"] = round(time.perf_counter() - started, 1)
        temporary = directory / (MANIFEST + ".tmp")
        temporary.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(temporary, directory / MANIFEST)  # the completion marker, written last
        return report


def describe_manifest(manifest: dict[str, Any]) -> str:
    """A few lines: each backbone's steps and held-out quality."""
    lines = []
    for name in BACKBONES:
        entry = manifest.get(name, {})
        quality = ", ".join(f"{k} {v:.3f}" for k, v in entry.items() if k not in ("steps", "seconds"))
        lines.append(f"  {name:<13} {entry.get('steps', '?'):>5} steps  {quality}")
    lines.append(f"  built in {manifest.get('seconds', '?')} s")
    return "\n".join(lines)
