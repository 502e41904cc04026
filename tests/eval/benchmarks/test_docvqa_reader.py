import json
import logging

import pytest

from vlmkit.eval.benchmarks import load_docvqa


def _layout(root, write_image):
    data = [
        {"questionId": 49153, "question": "What is the ratio?", "question_types": ["table/list"],
         "image": "documents/pybv0228_81.png", "docId": 14465, "answers": ["0.28", "0.28%"]},
        {"questionId": 24580, "question": "What is the date?", "question_types": ["form"],
         "image": "documents/nkbl0226_1.png", "docId": 3, "answers": ["May 5, 1986"]},
    ]  # fmt: skip
    afile = root / "val" / "val_v1.0.json"
    afile.parent.mkdir()
    afile.write_text(json.dumps({"dataset_name": "docvqa", "dataset_split": "val", "data": data}))
    for item in data:
        write_image(root / "val" / item["image"])
    return afile, root / "val"


def test_reads_questions_answers_and_relative_image_paths(tmp_path, write_image):
    afile, image_dir = _layout(tmp_path, write_image)
    samples = load_docvqa(afile, image_dir)
    assert [s.id for s in samples] == ["49153", "24580"]
    assert samples[0].answers == ("0.28", "0.28%") and samples[0].question == "What is the ratio?"
    assert samples[0].images == (image_dir / "documents" / "pybv0228_81.png",) and samples[0].images[0].is_file()
    assert samples[0].task == "docvqa" and samples[0].extra == {"doc_id": 14465, "question_types": ["table/list"]}
    assert len(load_docvqa(afile, image_dir, limit=1)) == 1
    flat = load_docvqa(afile, image_dir / "documents")  # the page images' own directory also works
    assert flat[1].images == (image_dir / "documents" / "nkbl0226_1.png",)


def test_bad_input(tmp_path, write_image, caplog):
    afile, image_dir = _layout(tmp_path, write_image)
    with pytest.raises(FileNotFoundError, match="test_v1.0.json"):
        load_docvqa(tmp_path / "test_v1.0.json", image_dir)
    (image_dir / "documents" / "pybv0228_81.png").unlink()
    with pytest.raises(FileNotFoundError, match="pybv0228_81.png"):
        load_docvqa(afile, image_dir)
    with caplog.at_level(logging.WARNING, logger="vlmkit.eval.benchmarks.docvqa"):
        assert [s.id for s in load_docvqa(afile, image_dir, skip_missing_images=True)] == ["24580"]
    assert "skipped 1 question(s)" in caplog.text
    data = json.loads(afile.read_text())
    del data["data"][1]["answers"]
    afile.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"val_v1.0.json: record 1 \(questionId 24580\) has no key 'answers'"):
        load_docvqa(afile, image_dir, skip_missing_images=True)
