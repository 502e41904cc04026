"""The README's "Compose in Python" snippet runs as shown (offline, tiny configs)."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_compose_in_python_runs_as_shown():
    code = readme_snippet("## Compose in Python")
    namespace: dict = {"__name__": "readme"}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "README.md:Compose in Python", "exec"), namespace)  # noqa: S102
    vlm, out, answer = namespace["vlm"], namespace["out"], namespace["answer"]
    assert out.logits.shape[:2] == namespace["batch"]["input_ids"].shape
    assert out.logits.shape[-1] == vlm.language_model.get_output_embeddings().weight.shape[0]
    assert answer.shape[0] == 1 and 1 <= answer.shape[1] <= 8
    assert output.getvalue().startswith("torch.Size([1, ")
