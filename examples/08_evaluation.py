# %% [markdown]
# # Lesson 8: evaluation by generation
#
# Validation during training (lesson 5) is teacher-forced. Benchmarks are scored differently: the model
# **generates** an answer greedily from a **prompt**, the text is cut at stop words, and a benchmark **metric**
# compares it with human references. The paper's protocol (appendix A.3):
#
# - prompts: open-ended `Question: {q}\nGive a very brief answer.`, multiple choice with `Choices:` and
#   `Answer with the letter.`; base models see few-shot examples (Table 8: 8-shot), instruction models answer
#   zero-shot in the chat template;
# - greedy decoding, stopped at `<end_of_utterance>`, EOS, or the words `Question` / `User`;
# - metrics: **VQA accuracy** (VQAv2, TextVQA: `min(#humans who gave the answer / 3, 1)`, averaged over leave-one-out
#   subsets of the 10 human answers), **ANLS** (DocVQA: edit-distance similarity, 0 below 0.5), **CIDEr** (COCO:
#   TF-IDF n-gram consensus with the reference captions).
#
# Run: `python examples/08_evaluation.py`. Figure: `examples/out/08_metrics.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import matplotlib.pyplot as plt
import torch

from vlmkit.data import VLMCollator, VLMProcessor
from vlmkit.data.synthetic import make_sample
from vlmkit.eval import EvalSample
from vlmkit.eval.generation import PAPER_STOP_STRINGS, answer
from vlmkit.eval.metrics import ANLS, CIDErD, VQAAccuracy, anls_score, vqa_accuracy
from vlmkit.eval.prompts import build_prompt, format_question, select_shots

torch.manual_seed(0)

# %% [markdown]
# ## The paper's prompts

# %%
query = EvalSample(
    id="q0",
    images=(make_sample(0, 3, "color").image,),
    question="What color is the triangle?",
    answers=("blue",) * 10,
    task="toy-vqa",
)
multiple_choice = EvalSample(
    id="m0",
    images=(),
    question="Which shape has three corners?",
    answers=("B",),
    choices=("circle", "triangle", "square"),
    task="toy-mc",
)
print("open-ended:\n" + format_question(query, "open"))
print("\nmultiple choice:\n" + format_question(multiple_choice, "multiple_choice"))

# %% [markdown]
# ## A 2-shot prompt, shown in full
#
# `select_shots` draws support examples reproducibly per query (never the query itself); `build_prompt` interleaves
# their images, questions and answers before the query. A base model gets plain text with `Answer:`; we render it
# with a tiny model's processor and print every token, image placeholders condensed.

# %%
support = [
    EvalSample(id=f"s{i}", images=(s.image,), question=s.question, answers=(s.answer,) * 10, task="toy-vqa")
    for i, s in enumerate(make_sample(1, i, "color") for i in range(6))
]
shots = select_shots(support, num_shots=2, seed=0, query=query)
images, turns = build_prompt(query, shots, style="open", chat=False)
vlm = _lesson.tiny_vlm(num_latents=4).eval()
processor = VLMProcessor.from_model(vlm, max_image_size=64, min_image_size=32)
prompt = processor(images, turns)  # chat=False: the prompt ends with "Answer:" by itself
text = vlm.tokenizer.decode(prompt["input_ids"])
shown = text.replace("<image>" * vlm.num_image_tokens(*prompt["pixel_values"][0].shape[1:]), "<image> x 4")
print(f"2-shot prompt ({len(prompt['input_ids'])} tokens, {len(images)} images):\n{'-' * 60}\n{shown}\n{'-' * 60}")

# %% [markdown]
# ## Greedy generation, cut at the stop words
#
# `vlmkit.eval.generation.answer` runs `vlm.generate` on a left-padded batch (KV cache, greedy) and decodes, cutting
# at the paper's stop strings. This model has random weights, so its answer is noise: the point is the mechanics
# (lesson 5 shows a trained model answering).

# %%
batch = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size, padding_side="left")([prompt])
with torch.no_grad():
    generated = answer(vlm, batch, max_new_tokens=8)
print(f"stop strings {PAPER_STOP_STRINGS}; generated answer (random weights): {generated[0]!r}")

# %% [markdown]
# ## The metrics on a handful of examples
#
# Hand-written predictions against references in each benchmark's format, scored per example by the functions and
# over the set by the `torchmetrics` metrics the evaluator uses (synced across processes in a multi-GPU run).

# %%
vqa_cases = [  # (prediction, the 10 human answers)
    ("blue", ["blue"] * 10),
    ("Blue.", ["blue"] * 10),  # normalised: case, punctuation
    ("two", ["2"] * 6 + ["two"] * 2 + ["3"] * 2),  # normalised "two" -> "2": 8 of 10 humans agree
    ("red", ["red"] * 2 + ["orange"] * 8),
    ("green", ["blue"] * 10),
]
anls_cases = [("$12.50", ["$12.50"]), ("12.50", ["$12.50"]), ("Jonh Smith", ["John Smith"]), ("invoice", ["total"])]
caption_cases = [
    ("a red circle on the left.", ["a red circle on the left.", "a small red circle at the left side."]),
    ("a blue square.", ["a blue square on the right.", "one blue square to the right."]),
    ("a green triangle.", ["a red circle on the left.", "a red disc on the left side."]),
]
vqa_scores = [vqa_accuracy(p, r) for p, r in vqa_cases]
anls_scores = [anls_score(p, r) for p, r in anls_cases]
vqa_metric, anls_metric, cider_metric = VQAAccuracy(), ANLS(), CIDErD()
vqa_metric.update([p for p, _ in vqa_cases], [r for _, r in vqa_cases])
anls_metric.update([p for p, _ in anls_cases], [r for _, r in anls_cases])
cider_metric.update([p for p, _ in caption_cases], [r for _, r in caption_cases])
print("VQA accuracy:")
for (p, r), s in zip(vqa_cases, vqa_scores):
    print(f"  {p!r:9} vs {sorted(set(r))} -> {s:.2f}")
print(f"  VQAAccuracy over the set: {float(vqa_metric.compute()):.3f} (mean {sum(vqa_scores) / len(vqa_scores):.3f})")
print("ANLS:")
for (p, r), s in zip(anls_cases, anls_scores):
    print(f"  {p!r:12} vs {r} -> {s:.2f}")
print(f"  ANLS over the set: {float(anls_metric.compute()):.3f}")
cider = float(cider_metric.compute())
print(f"CIDEr-D of the 3 captions (corpus of their references): {cider:.3f}")

# %% [markdown]
# ## Figure: per-example scores

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"wspace": 0.45})
axes[0].barh([f"{p!r}" for p, _ in vqa_cases], vqa_scores, color="tab:blue")
axes[0].set_xlim(0, 1)
axes[0].set_title("VQA accuracy per answer")
axes[1].barh([f"{p!r}" for p, _ in anls_cases], anls_scores, color="tab:orange")
axes[1].set_xlim(0, 1)
axes[1].set_title("ANLS per answer")
for ax in axes:
    ax.invert_yaxis()
fig.suptitle(f"Benchmark metrics on hand-written answers (CIDEr-D of 3 captions: {cider:.2f}) (lesson 8)", y=1.05)
figure = _lesson.save(fig, "08_metrics.png")

# %% [markdown]
# **What to remember.** A score is prompt + decoding + metric; vlmkit reproduces the paper's three. In training,
# `EvaluationDataModule` + `GenerationEvaluator` run this on benchmark readers (`vlmkit validate` with an `eval:`
# section). Next: lesson 9, the data that feeds training.
