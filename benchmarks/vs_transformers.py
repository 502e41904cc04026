"""vlmkit against transformers' own ``Idefics2ForConditionalGeneration`` on the same weights, side by side.

    python benchmarks/vs_transformers.py [--rounds 5] [--quick] [--threads 2] [--out benchmarks/results]

A transformers Idefics2 at a "small" config (SigLIP-like tower 6 x 256, patch 14, 224 px; perceiver 3 layers, 64
latents; Mistral-like LM 6 x 512, GQA 8/4, 32k vocabulary; ~70 M parameters, random weights) is saved with
``save_pretrained`` and imported with ``import_idefics2(patch_packing=True)`` (attention: ``sdpa``, which in vlmkit
computes packed rows and packed images segment by segment). The script checks that the logits agree (fp32: 1e-4)
and that greedy tokens are identical, then measures, in one process with alternating rounds (the order of the two
libraries flips every round, so machine load hits both alike):

- training step (forward, backward, AdamW step; each side with its stack's default optimizer: fused AdamW, as
  transformers' ``Trainer`` and vlmkit's ``VLMModule`` build it) on a uniform batch: 4 x 256 tokens, one 224 px image
  per sample;
- training step on a mixed batch: 8 samples of 40-400 text tokens and one image each, of different sizes and
  aspects; transformers gets it padded (as its collators give it), vlmkit packed (``pack`` + ``PackedCollator``,
  rows of 1024 tokens);
- greedy generation of 32 tokens at batch 1 and 4 (one 224 px image and 20-40 text tokens per prompt);
- step time against images per sample (1, 2, 4, 8; batch 1, 64 text tokens).

FLOPs per step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (attention included: the CPU SDPA
kernels get torch's own SDPA formulas), MFU is against a matmul peak measured in the same run (2048^3 matmuls), and
peak memory is the peak tensor memory of a step (after a warm-up step) above the tensors alive before it:
``torch.cuda.max_memory_allocated`` on CUDA, the same quantity counted exactly on CPU (``TensorMemory``: every
storage created, until freed). On CUDA both run in bf16 and MFU is against the measured bf16 matmul peak. Prints a
table of median [min..max] per-round ratios (vlmkit / transformers; below 1: vlmkit faster) and writes
``vs_transformers.json``, ``vs_transformers.md`` and ``vs_transformers.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count
from torch.utils.weak import WeakIdKeyDictionary

from vlmkit.trainability import temporarily_frozen

PATCH = 14
IMAGE = 224
LATENTS = 64
TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 8,
        "num_key_value_heads": 4, "vocab_size": 32000}  # fmt: skip
VISION = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 4,
          "patch_size": PATCH, "image_size": IMAGE}  # fmt: skip
PERCEIVER = {"resampler_n_latents": LATENTS, "resampler_depth": 3, "resampler_n_heads": 8, "resampler_head_dim": 64,
             "num_key_value_heads": 4}  # fmt: skip
MIXED_SIZES = [(224, 224), (224, 154), (154, 224), (112, 224), (224, 112), (168, 168), (196, 224), (140, 210)]
PACK_LENGTH = 1024


# --------------------------------------------------------------------------------------------------- the checkpoint
def save_checkpoint(path: Path):
    """Save the small transformers Idefics2 (random weights of unit-scale activations) and its processor."""
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessor, Idefics2Processor

    from vlmkit.interop import IDEFICS2_CHAT_TEMPLATE
    from vlmkit.text.tokenizer import build_synthetic_tokenizer

    tokenizer = build_synthetic_tokenizer()
    image_processor = Idefics2ImageProcessor(do_image_splitting=False, size={"shortest_edge": 112, "longest_edge": 224})
    processor = Idefics2Processor(
        image_processor, tokenizer, image_seq_len=LATENTS, chat_template=IDEFICS2_CHAT_TEMPLATE
    )
    config = Idefics2Config(
        vision_config=VISION,
        perceiver_config={"hidden_size": TEXT["hidden_size"], **PERCEIVER},
        text_config={
            "model_type": "mistral",
            **TEXT,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },  # fmt: skip
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Idefics2ForConditionalGeneration(config)
    with torch.no_grad():  # random weights of unit-scale activations: logits with clear argmaxes
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * (0.5 if param.ndim == 1 else param.shape[-1] ** -0.5))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model, tokenizer


# -------------------------------------------------------------------------------------------------------- batches
class Batches:
    """The inputs of every regime, for both libraries, built from one seed."""

    def __init__(self, tokenizer, image_token_id: int, device: torch.device, dtype: torch.dtype) -> None:
        self.fake = tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
        self.image = image_token_id
        self.pad = tokenizer.pad_token_id
        self.low = len(tokenizer)  # text ids above the tokenizer's: never a special token
        self.device, self.dtype = device, dtype
        self.generator = torch.Generator().manual_seed(0)

    def sample(self, text_tokens: int, sizes: list[tuple[int, int]]) -> dict:
        """One sample: per image ``<fake><image>*64<fake>``, then text; its images ``[3, h, w]``."""
        ids = []
        for _ in sizes:
            ids += [self.fake] + [self.image] * LATENTS + [self.fake]
        ids += torch.randint(self.low, TEXT["vocab_size"], (text_tokens,), generator=self.generator).tolist()
        ids = torch.tensor(ids)
        pixels = [torch.randn(3, h, w, generator=self.generator) for h, w in sizes]
        return {"input_ids": ids, "labels": ids.masked_fill(ids == self.image, -100), "pixel_values": pixels}

    def transformers_batch(self, samples: list[dict], left: bool = False) -> dict:
        """Padded Idefics2 inputs: ``pixel_values [b, n, 3, H, W]`` and ``pixel_attention_mask [b, n, H, W]``."""
        length = max(len(s["input_ids"]) for s in samples)
        n = max(len(s["pixel_values"]) for s in samples)
        height = max(p.shape[1] for s in samples for p in s["pixel_values"])
        width = max(p.shape[2] for s in samples for p in s["pixel_values"])
        b = len(samples)
        ids = torch.full((b, length), self.pad)
        labels = torch.full((b, length), -100)
        mask = torch.zeros(b, length, dtype=torch.long)
        pixels = torch.zeros(b, n, 3, height, width)
        pixel_mask = torch.zeros(b, n, height, width, dtype=torch.long)
        for i, s in enumerate(samples):
            k = len(s["input_ids"])
            cols = slice(length - k, length) if left else slice(0, k)
            ids[i, cols], labels[i, cols], mask[i, cols] = s["input_ids"], s["labels"], 1
            for j, p in enumerate(s["pixel_values"]):
                pixels[i, j, :, : p.shape[1], : p.shape[2]] = p
                pixel_mask[i, j, : p.shape[1], : p.shape[2]] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "pixel_attention_mask": pixel_mask,
                 "labels": labels}  # fmt: skip
        return {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}

    def vlmkit_batch(self, samples: list[dict], packed: bool = False, left: bool = False) -> dict:
        """vlmkit inputs: padded (from the transformers batch) or packed rows (``pack`` + ``PackedCollator``)."""
        if packed:
            from vlmkit.data.sequence_packing import PackedCollator, pack

            batch = PackedCollator(self.pad, PATCH)(list(pack(samples, PACK_LENGTH)))
        else:
            from vlmkit.interop import from_idefics2_inputs

            batch = self.transformers_batch(samples, left)
            batch["pixel_values"], batch["patch_mask"] = from_idefics2_inputs(
                batch["pixel_values"], batch.pop("pixel_attention_mask"), PATCH
            )
        return {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}


def uniform_samples(batches: Batches) -> list[dict]:
    return [batches.sample(256 - LATENTS - 2, [(IMAGE, IMAGE)]) for _ in range(4)]


def mixed_samples(batches: Batches) -> list[dict]:
    lengths = torch.randint(40, 401, (8,), generator=torch.Generator().manual_seed(1)).tolist()
    return [batches.sample(n, [size]) for n, size in zip(lengths, MIXED_SIZES)]


def prompt_samples(batches: Batches, count: int) -> list[dict]:
    lengths = torch.randint(20, 41, (count,), generator=torch.Generator().manual_seed(2)).tolist()
    return [batches.sample(n, [(IMAGE, IMAGE)]) for n in lengths]


# ---------------------------------------------------------------------------------------------------------- steps
def transformers_loss(model, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def vlmkit_loss(module, batch: dict) -> torch.Tensor:
    """``VLMModule.training_step``'s loss (without its logging): logits at the labelled positions only."""
    from vlmkit.training.module import answer_loss, scored_positions

    positions = scored_positions(batch["labels"])
    logits = module(batch, logits_to_keep=0 if positions is None else positions).logits
    return answer_loss(logits, batch["labels"], positions)


def train_step(model, optimizer, loss_fn: Callable, batch: dict) -> None:
    loss_fn(model, batch).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


class TensorMemory(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while active (each freed when its last reference goes).

    The CPU counterpart of the CUDA allocator's statistics, counted exactly: every op's outputs pass through
    ``__torch_dispatch__`` (forward, backward and optimizer alike); a storage seen for the first time is added, and a
    weak reference subtracts it when it is freed. Views and in-place results share their input's storage and are
    not counted (nor are tensors that existed before).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in tensors}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in inputs and storage not in self._seen:  # new: not a view or in-place
                    self._seen[storage] = weakref.finalize(storage, self._free, storage.nbytes())
                    self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        return out


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak tensor memory of ``fn`` above the tensors alive before it, MiB.

    CUDA: the caching allocator's peak. CPU: the same quantity, counted by :class:`TensorMemory`. The resident-set
    high-water mark is not used: glibc keeps freed blocks, so whichever library runs second reuses the pool the
    first one grew and looks smaller.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with TensorMemory() as counter:
        fn()
    return counter.peak / 2**20


_CPU_SDPA_COUNTED = False


def count_cpu_sdpa() -> None:
    """Let FlopCounterMode count the CPU SDPA kernels (torch counts only the CUDA ones) with torch's own formulas."""
    global _CPU_SDPA_COUNTED
    if _CPU_SDPA_COUNTED:
        return
    aten = torch.ops.aten

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu, get_raw=False)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward, get_raw=False)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    _CPU_SDPA_COUNTED = True


def count_flops(fn: Callable[[], object]) -> tuple[float, float]:
    """(total, attention) GFLOP of ``fn``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in per_op.items() if "scaled_dot_product" in str(op))
    return counter.get_total_flops() / 1e9, attention / 1e9


@torch.no_grad()
def decode_matmul_seconds(model, batch_size: int, steps: int, device: torch.device, reps: int = 3) -> float:
    """Best time of the matmuls alone of ``steps`` decode steps: every ``nn.Linear`` of the language model and its
    head applied to ``[batch_size, in]`` (attention over the cache and all other ops left out). A decode step of a
    small model reads every weight once for a few rows, so this is a floor set by memory bandwidth, the same for any
    implementation of these weights; the rest of a generation is the prefill and per-op overhead."""
    text = model.model.text_model
    weights = [m.weight for m in text.modules() if isinstance(m, torch.nn.Linear)] + [model.lm_head.weight]
    rows = {w.shape[1]: torch.randn(batch_size, w.shape[1], device=device, dtype=w.dtype) for w in weights}
    best = float("inf")
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            for w in weights:
                rows[w.shape[1]] @ w.T
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(device: torch.device, dtype: torch.dtype, reps: int = 3) -> float:
    """Best FLOP/s of a 2048^3 matmul."""
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(reps))
    return 2 * 2048**3 / best


# ----------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (ratios are per round)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 8 new tokens, images per sample 1/2")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    new_tokens = 8 if args.quick else 32
    image_counts = (1, 2) if args.quick else (1, 2, 4, 8)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    count_cpu_sdpa()

    from transformers import Idefics2ForConditionalGeneration

    from vlmkit.interop import import_idefics2
    from vlmkit.training import VLMModule

    with tempfile.TemporaryDirectory() as tmp:
        _, tokenizer = save_checkpoint(Path(tmp))
        reference = Idefics2ForConditionalGeneration.from_pretrained(tmp, dtype=dtype, attn_implementation="sdpa")
        vlm = import_idefics2(tmp, train_vision_encoder="full", train_language_model="full", patch_packing=True,
                              torch_dtype=str(dtype).removeprefix("torch."))  # fmt: skip
    reference.to(device)
    vlm.to(device)
    reference.generation_config.eos_token_id = None  # 32 tokens every time, on both sides
    parameters = sum(p.numel() for p in reference.parameters())
    batches = Batches(tokenizer, reference.config.image_token_id, device, dtype)
    print(f"device {device}, {dtype}, {args.threads} threads, {parameters / 1e6:.1f} M parameters, {rounds} rounds")

    # ---------------------------------------------------------------------------------------- agreement checks
    reference.eval(), vlm.eval()
    mixed = mixed_samples(batches)
    with torch.no_grad():
        t_batch = batches.transformers_batch(mixed)
        expected = reference(**{k: v for k, v in t_batch.items() if k != "labels"}).logits.float()
        real = t_batch["attention_mask"].bool()
        padded_logits = vlmkit_forward_logits(vlm, batches.vlmkit_batch(mixed))
        packed = batches.vlmkit_batch(mixed, packed=True)
        packed_logits = vlmkit_forward_logits(vlm, packed)
    packed_real = unpack_real(packed_logits, packed["segment_ids"], len(mixed))  # per sample, in order
    padded_diff = (padded_logits[real] - expected[real]).abs().max().item()
    packed_diff = max((got - expected[i, : len(got)]).abs().max().item() for i, got in enumerate(packed_real))
    prompts4 = prompt_samples(batches, 4)
    t_gen, v_gen = batches.transformers_batch(prompts4, left=True), batches.vlmkit_batch(prompts4, left=True)
    expected_tokens = transformers_generate(reference, t_gen, new_tokens)
    got_tokens = vlmkit_generate(vlm, v_gen, new_tokens)
    tokens_equal = torch.equal(expected_tokens, got_tokens)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    print(f"max |logit difference|: padded {padded_diff:.2e}, packed {packed_diff:.2e} (tolerance {tolerance:g}); "
          f"greedy tokens identical: {tokens_equal}")  # fmt: skip
    if dtype == torch.float32 and (max(padded_diff, packed_diff) > tolerance or not tokens_equal):
        raise SystemExit("vlmkit and transformers disagree: not benchmarking")

    # --------------------------------------------------------------------------------------------- the regimes
    reference.train(), vlm.train()
    t_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-5, fused=True)  # transformers' Trainer default
    module = VLMModule(vlm)
    v_optimizer = module.configure_optimizers()
    uniform = uniform_samples(batches)
    prompts1 = prompt_samples(batches, 1)
    inputs = {
        "uniform": (batches.transformers_batch(uniform), batches.vlmkit_batch(uniform)),
        "mixed": (batches.transformers_batch(mixed), batches.vlmkit_batch(mixed, packed=True)),
        "generate_b1": (batches.transformers_batch(prompts1, left=True), batches.vlmkit_batch(prompts1, left=True)),
        "generate_b4": (t_gen, v_gen),
    }
    for k in image_counts:
        samples = [batches.sample(64, [(IMAGE, IMAGE)] * k)]
        inputs[f"images_{k}"] = (batches.transformers_batch(samples), batches.vlmkit_batch(samples))

    def step(name: str, side: str) -> Callable[[], object]:
        t_in, v_in = inputs[name]
        if name.startswith("generate"):
            if side == "transformers":
                return lambda: transformers_generate(reference, t_in, new_tokens)
            return lambda: vlmkit_generate(vlm, v_in, new_tokens)
        if side == "transformers":
            return lambda: train_step(reference, t_optimizer, transformers_loss, t_in)
        return lambda: train_step(module, v_optimizer, vlmkit_loss, v_in)

    def model_of(side: str):
        return reference if side == "transformers" else vlm

    def trained_of(side: str):
        return reference if side == "transformers" else module

    sides = ("vlmkit", "transformers")
    names = list(inputs)
    results: dict[str, dict] = {name: {side: {} for side in sides} for name in names}
    for name in names:  # FLOPs (forward + backward, or the whole generation) and peak memory, once
        for side in sides:
            model_of(side).train(not name.startswith("generate"))
            if name.startswith("generate"):
                with temporarily_frozen(model_of(side)):
                    flops = count_flops(step(name, side))
                step(name, side)()  # warm-up
                peak_mib = peak_memory_mib(step(name, side), device)
            else:
                t_in, v_in = inputs[name]
                loss_fn, batch = (transformers_loss, t_in) if side == "transformers" else (vlmkit_loss, v_in)
                trained = trained_of(side)
                flops = count_flops(lambda f=loss_fn, m=trained, b=batch: f(m, b).backward())
                model_of(side).zero_grad(set_to_none=True)
                step(name, side)()  # warm-up: AdamW allocates its state here, on both sides alike
                peak_mib = peak_memory_mib(step(name, side), device)
            results[name][side]["gflop"], results[name][side]["attention_gflop"] = flops
            results[name][side]["peak_mib"] = peak_mib
        print(f"{name}: FLOPs counted, peak memory of a step after the warm-up measured")
    times = {name: {side: [] for side in sides} for name in names}
    peaks = []
    start = time.perf_counter()
    for r in range(rounds):
        peaks.append(matmul_peak(device, dtype))
        order = sides if r % 2 == 0 else sides[::-1]
        for name in names:
            for side in order:
                model_of(side).train(not name.startswith("generate"))
                times[name][side].append(timed(step(name, side), device))
        print(f"round {r + 1}/{rounds}: {time.perf_counter() - start:.0f} s")
    peak = max(peaks)
    for name, batch_size in (("generate_b1", 1), ("generate_b4", 4)):  # decode steps after the prefill's token
        results[name]["decode_matmul_s"] = decode_matmul_seconds(reference, batch_size, new_tokens - 1, device)
    for name in names:
        ratios = [v / t for v, t in zip(times[name]["vlmkit"], times[name]["transformers"])]
        results[name]["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        for side in sides:
            entry = results[name][side]
            entry["seconds"] = times[name][side]
            entry["median_s"] = statistics.median(times[name][side])
            entry["mfu"] = entry["gflop"] * 1e9 / entry["median_s"] / peak
    report = {
        "device": str(device), "dtype": str(dtype), "threads": args.threads, "rounds": rounds,
        "parameters": parameters, "matmul_peak_gflops": peak / 1e9, "new_tokens": new_tokens,
        "max_logit_difference": {"padded": padded_diff, "packed": packed_diff}, "greedy_tokens_identical": tokens_equal,
        "memory": "peak tensor memory above the tensors alive before a step (after a warm-up step), MiB: "
        + ("the CUDA allocator's peak" if device.type == "cuda" else "counted by TensorMemory (every storage created)"),
        "benchmark_seconds": time.perf_counter() - start, "regimes": results,
    }  # fmt: skip
    write_reports(report, Path(args.out), image_counts)


def vlmkit_forward_logits(vlm, batch: dict) -> torch.Tensor:
    return vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch.get("patch_mask"),
               position_ids=batch.get("position_ids"), segment_ids=batch.get("segment_ids")).logits.float()  # fmt: skip


def unpack_real(logits: torch.Tensor, segment_ids: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The logits of each packed sample ``[len_i, vocab]``, in sample order."""
    out = []
    for row in range(logits.shape[0]):
        for segment in segment_ids[row].unique().tolist():
            if segment >= 0:
                out.append(logits[row, segment_ids[row] == segment])
    assert len(out) == count
    return out


@torch.no_grad()
def transformers_generate(model, batch: dict, new_tokens: int) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=0, do_sample=False, eos_token_id=None)
    return out[:, batch["input_ids"].shape[1] :]


def vlmkit_generate(vlm, batch: dict, new_tokens: int) -> torch.Tensor:
    return vlm.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"],
                        max_new_tokens=new_tokens, stop_token_ids=[])  # fmt: skip


LABELS = {
    "uniform": "training step, uniform batch (4 x 256 tokens, one 224 px image each)",
    "mixed": "training step, mixed batch (8 samples, 40-400 text tokens, mixed image sizes; vlmkit packed)",
    "generate_b1": "greedy generation, {new} tokens, batch 1",
    "generate_b4": "greedy generation, {new} tokens, batch 4",
}


def write_reports(report: dict, out: Path, image_counts: tuple[int, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vs_transformers.json").write_text(json.dumps(report, indent=2) + "\n")
    regimes = report["regimes"]
    lines = [
        f"device {report['device']} ({report['dtype']}, {report['threads']} threads), {report['rounds']} alternating "
        f"rounds, {report['parameters'] / 1e6:.1f} M parameters, matmul peak {report['matmul_peak_gflops']:.0f} "
        f"GFLOP/s; max |logit diff| padded {report['max_logit_difference']['padded']:.1e}, packed "
        f"{report['max_logit_difference']['packed']:.1e}; greedy tokens identical: {report['greedy_tokens_identical']}",
        "",
        "| regime | vlmkit / transformers time, median [min..max] | vlmkit s | transformers s | GFLOP (attention) "
        "vlmkit / transformers | MFU vlmkit / transformers | peak MiB vlmkit / transformers |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in regimes.items():
        label = LABELS.get(name) or f"training step, {name.split('_')[-1]} x 224 px images per sample (batch 1)"
        v, t, r = entry["vlmkit"], entry["transformers"], entry["ratio"]
        lines.append(
            f"| {label.format(new=report['new_tokens'])} | {r['median']:.2f} [{r['min']:.2f}..{r['max']:.2f}] | "
            f"{v['median_s']:.3f} | {t['median_s']:.3f} | {v['gflop']:.0f} ({v['attention_gflop']:.1f}) / "
            f"{t['gflop']:.0f} ({t['attention_gflop']:.1f}) | {v['mfu']:.0%} / {t['mfu']:.0%} | "
            f"{v['peak_mib']:.0f} / {t['peak_mib']:.0f} |"
        )
    lines.append("")
    for name in ("generate_b1", "generate_b4"):
        entry = regimes[name]
        floor = entry["decode_matmul_s"]
        lines.append(
            f"{LABELS[name].format(new=report['new_tokens'])}: the decode steps' matmuls alone (every LM weight read "
            f"once per step) take {floor:.3f} s = {floor / entry['vlmkit']['median_s']:.0%} of vlmkit's time, "
            f"{floor / entry['transformers']['median_s']:.0%} of transformers'."
        )
    lines.append(f"Peak memory: {report['memory']}. Benchmark loop: {report['benchmark_seconds']:.0f} s.")
    text = "\n".join(lines)
    (out / "vs_transformers.md").write_text(text + "\n")
    print(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [n for n in regimes if not n.startswith("images_")]
    ratios = [regimes[n]["ratio"] for n in names]
    left.bar(range(len(names)), [r["median"] for r in ratios],
             yerr=[[r["median"] - r["min"] for r in ratios], [r["max"] - r["median"] for r in ratios]])  # fmt: skip
    left.axhline(1.0, color="gray", linestyle="--")
    left.set_xticks(range(len(names)), names)
    left.set_ylabel("vlmkit time / transformers time")
    left.set_title("per-round ratios (median, min..max)")
    for side in ("vlmkit", "transformers"):
        right.plot(image_counts, [regimes[f"images_{k}"][side]["median_s"] for k in image_counts], "o-", label=side)
    right.set_xlabel("224 px images per sample")
    right.set_ylabel("training step, s")
    right.set_title("step time vs images per sample")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "vs_transformers.png", dpi=100)


if __name__ == "__main__":
    main()
