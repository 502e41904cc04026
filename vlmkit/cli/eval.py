"""``vlmkit eval``: run lmms-eval tasks on a trained model (:mod:`vlmkit.interop.lmms_eval`).

    vlmkit eval --checkpoint runs/.../last.ckpt --tasks mme,textvqa_val --limit 100 --output_dir eval/

Needs lmms-eval (``pip install "vlmkit[lmms]"``), which downloads its benchmarks itself. The model is loaded like
``vlmkit generate`` loads it (any form of a trained model) and answers lmms-eval's requests through vlmkit's processor
and ``generate``; the scores are printed as a table and written to ``--output_dir/results.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from vlmkit.errors import UserInputError

MISSING_LMMS_EVAL = (
    "vlmkit eval needs lmms-eval, which is not installed: pip install 'vlmkit[lmms]' (or pip install lmms-eval)"
)


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``vlmkit eval``; returns lmms-eval's results."""
    from vlmkit.cli.generate import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="vlmkit eval",
        description="Run lmms-eval tasks (e.g. mme,textvqa_val) on a trained model (pip install 'vlmkit[lmms]').",
    )
    add_model_arguments(parser)
    parser.add_argument("--tasks", required=True, help="comma-separated lmms-eval task names, e.g. mme,textvqa_val")
    parser.add_argument("--limit", type=float, help="at most this many documents per task (< 1: a fraction)")
    parser.add_argument("--output_dir", help="write results.json (and per-sample logs) here")
    parser.add_argument("--max_new_tokens", type=int, default=128, help="answer budget when a task sets none")
    parser.add_argument("--plain", action="store_true", help="plain-text prompts instead of the chat template")
    options = parser.parse_args(args)
    tasks = [t.strip() for t in options.tasks.split(",") if t.strip()]
    if not tasks:
        raise UserInputError(f"--tasks names no task: {options.tasks!r}")
    if importlib.util.find_spec("lmms_eval") is None:  # before the model is built
        raise UserInputError(MISSING_LMMS_EVAL)
    from lmms_eval.evaluator import simple_evaluate

    from vlmkit.cli.generate import load_pipeline
    from vlmkit.interop.lmms_eval import lmms_eval_model

    pipe = load_pipeline(options)
    processor = pipe.processor.image_processor
    model = lmms_eval_model(
        pipe.vlm,
        max_image_size=processor.max_image_size,
        min_image_size=processor.min_image_size,
        eval_image_splitting=pipe.split_images,
        chat=not options.plain,
        default_max_new_tokens=options.max_new_tokens,
    )
    limit = None if options.limit is None else (int(options.limit) if options.limit >= 1 else options.limit)
    results = simple_evaluate(model=model, tasks=tasks, limit=limit, batch_size=1, log_samples=bool(options.output_dir))
    if results is None:  # not rank 0
        return {}
    print(results_table(results.get("results", {})))
    if options.output_dir:
        folder = Path(options.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "results.json"
        path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return results


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """``task  metric  value`` rows of lmms-eval's per-task results (numbers only; stderr columns left out)."""
    rows = [("task", "metric", "value")]
    for task, metrics in results.items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in name:
                rows.append((task, name.split(",")[0], f"{value:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)
