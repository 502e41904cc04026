import json
import logging
from pathlib import Path

import pytest

from vlmkit.eval.benchmarks import load_okvqa, load_textvqa, load_vqav2


def _vqa_layout(root: Path, write_image, prefix: str = "COCO_val2014", subtype: str | None = "val2014"):
    """VQAv2's published layout: questions file, annotations file, COCO images (3 questions, 2 images)."""
    questions = [
        {"image_id": 42, "question": "What color is the bus?", "question_id": 42000},
        {"image_id": 42, "question": "Is it raining?", "question_id": 42001},
        {"image_id": 7, "question": "How many dogs?", "question_id": 7000},
    ]
    answers = {42000: ["red"] * 9 + ["orange"], 42001: ["no"] * 10, 7000: ["2"] * 8 + ["two", "3"]}
    annotations = [
        {
            "question_id": q["question_id"],
            "image_id": q["image_id"],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(ans)],
            "multiple_choice_answer": ans[0],
            "answer_type": "other",
            "question_type": "what",
        }
        for q, ans in zip(questions, answers.values())
    ]
    head = {"data_subtype": subtype} if subtype else {}
    qfile = root / "v2_OpenEnded_mscoco_val2014_questions.json"
    qfile.write_text(json.dumps({**head, "task_type": "Open-Ended", "questions": questions}))
    afile = root / "v2_mscoco_val2014_annotations.json"
    afile.write_text(json.dumps({**head, "annotations": annotations}))
    for image_id in (42, 7):
        write_image(root / "val2014" / f"{prefix}_{image_id:012d}.jpg")
    return qfile, afile, root / "val2014"


def test_vqav2_reads_questions_answers_and_image_paths(tmp_path, write_image):
    qfile, afile, images = _vqa_layout(tmp_path, write_image)
    samples = load_vqav2(qfile, afile, images)
    assert [s.id for s in samples] == ["42000", "42001", "7000"]
    first = samples[0]
    assert first.question == "What color is the bus?" and first.task == "vqav2" and first.choices == ()
    assert first.answers == ("red",) * 9 + ("orange",)
    assert first.images == (images / "COCO_val2014_000000000042.jpg",)
    assert all(isinstance(p, Path) and p.is_file() for s in samples for p in s.images)
    assert first.extra == {
        "image_id": 42,
        "multiple_choice_answer": "red",
        "answer_type": "other",
        "question_type": "what",
    }
    assert [s.id for s in load_vqav2(qfile, afile, images, limit=2)] == ["42000", "42001"]
    assert load_vqav2(qfile, afile, images, limit=0) == []


def test_okvqa_finds_any_split_prefix_and_test_dev_has_no_answers(tmp_path, write_image):
    qfile, afile, images = _vqa_layout(tmp_path, write_image, prefix="COCO_train2014", subtype=None)
    samples = load_okvqa(qfile, afile, images)
    assert samples[2].images == (images / "COCO_train2014_000000000007.jpg",)
    assert samples[2].task == "okvqa" and samples[2].answers[-2:] == ("two", "3")
    without = load_okvqa(qfile, None, images, limit=1)
    assert without[0].answers == () and without[0].extra == {"image_id": 42}


def test_missing_files_are_named(tmp_path, write_image):
    qfile, afile, images = _vqa_layout(tmp_path, write_image)
    with pytest.raises(FileNotFoundError, match="nope_questions.json"):
        load_vqav2(tmp_path / "nope_questions.json", afile, images)
    with pytest.raises(FileNotFoundError, match="nope_annotations.json"):
        load_vqav2(qfile, tmp_path / "nope_annotations.json", images)
    with pytest.raises(FileNotFoundError, match="no_images"):
        load_vqav2(qfile, afile, tmp_path / "no_images")


def test_missing_keys_name_file_record_and_key(tmp_path, write_image):
    qfile, afile, images = _vqa_layout(tmp_path, write_image)
    data = json.loads(qfile.read_text())
    del data["questions"][1]["question"]
    qfile.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"questions.json: record 1 \(question_id 42001\) has no key 'question'"):
        load_vqav2(qfile, afile, images)
    annotations = json.loads(afile.read_text())
    del annotations["annotations"][0]["answers"][3]["answer"]
    afile.write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match=r"annotations.json: record 0 \(question_id 42000\) answer 3 has no key"):
        load_vqav2(qfile, afile, images, limit=1)
    annotations["annotations"] = annotations["annotations"][1:]
    afile.write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="no annotation for question_id 42000"):
        load_vqav2(qfile, afile, images, limit=1)


def test_missing_image_raises_or_is_skipped_and_counted(tmp_path, write_image, caplog):
    qfile, afile, images = _vqa_layout(tmp_path, write_image)
    (images / "COCO_val2014_000000000042.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000000042.jpg"):
        load_vqav2(qfile, afile, images)
    with caplog.at_level(logging.WARNING, logger="vlmkit.eval.benchmarks.vqa"):
        samples = load_vqav2(qfile, afile, images, skip_missing_images=True)
    assert [s.id for s in samples] == ["7000"]
    assert "skipped 2 question(s)" in caplog.text


def _textvqa_layout(root: Path, write_image) -> tuple[Path, Path]:
    ids = ("003a8ae2ef43b901", "00685bc495504d61")
    data = [
        {"question_id": 34602, "question": "what is the brand?", "image_id": ids[0], "answers": ["nokia"] * 10},
        {"question_id": 34603, "question": "what year?", "image_id": ids[1], "answers": ["1990"] * 7 + ["1991"] * 3},
    ]
    afile = root / "TextVQA_0.5.1_val.json"
    afile.write_text(json.dumps({"dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}))
    for item in data:
        write_image(root / "train_images" / f"{item['image_id']}.jpg")
    return afile, root / "train_images"


def test_textvqa_reads_answers_and_images(tmp_path, write_image):
    afile, images = _textvqa_layout(tmp_path, write_image)
    samples = load_textvqa(afile, images)
    assert [s.id for s in samples] == ["34602", "34603"]
    assert samples[1].answers == ("1990",) * 7 + ("1991",) * 3 and samples[1].task == "textvqa"
    assert samples[0].images == (images / "003a8ae2ef43b901.jpg",) and samples[0].images[0].is_file()
    assert len(load_textvqa(afile, images, limit=1)) == 1


def test_textvqa_bad_input(tmp_path, write_image):
    afile, images = _textvqa_layout(tmp_path, write_image)
    data = json.loads(afile.read_text())
    del data["data"][1]["answers"]
    afile.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"TextVQA_0.5.1_val.json: record 1 \(question_id 34603\) has no key 'answers'"
    ):
        load_textvqa(afile, images)
    (images / "003a8ae2ef43b901.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="003a8ae2ef43b901.jpg"):
        load_textvqa(afile, images, limit=1)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_textvqa(tmp_path / "missing.json", images)
