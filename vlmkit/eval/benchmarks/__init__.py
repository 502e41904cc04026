"""Benchmark readers: the published files of each benchmark -> ``list[EvalSample]``.

Each reader takes plain paths (no download, no network), checks every record it reads and names the file,
record and key in its errors; images come back as paths or embedded PIL images, never loaded from disk.
"""

from vlmkit.eval.benchmarks.captioning import load_coco_captions
from vlmkit.eval.benchmarks.docvqa import load_docvqa
from vlmkit.eval.benchmarks.multiple_choice import load_mathvista, load_mmbench, load_mmmu
from vlmkit.eval.benchmarks.synthetic import load_synthetic
from vlmkit.eval.benchmarks.vqa import load_okvqa, load_textvqa, load_vqav2

__all__ = [
    "load_coco_captions",
    "load_docvqa",
    "load_mathvista",
    "load_mmbench",
    "load_mmmu",
    "load_okvqa",
    "load_synthetic",
    "load_textvqa",
    "load_vqav2",
]
