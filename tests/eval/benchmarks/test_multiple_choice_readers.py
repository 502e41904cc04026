import base64
import csv
import json
import logging
import sys

import pytest
from PIL import Image

from vlmkit.eval.benchmarks import load_mathvista, load_mmbench, load_mmmu

# --- MMBench -----------------------------------------------------------------------------------------------

_MMBENCH_HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "l2-category"]


def _write_tsv(path, header, rows):
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _mmbench(tmp_path, encoded_image, header=_MMBENCH_HEADER, answer=True):
    png = base64.b64encode(encoded_image("PNG")).decode()
    jpeg = base64.b64encode(encoded_image("JPEG", (0, 0, 255))).decode()
    rows = [
        [0, "Which color is\nshown?", "The image is plain.", "red", "blue", "green", "", "A", "color", png, "fine"],
        [1, "Which one is a fruit?", "nan", "apple", "stone", "", "", "A", "attribute", jpeg, "coarse"],
        [1000001, "Which color is shown?", "", "blue", "red", "green", "", "B", "color", "0", "fine"],
    ]
    if not answer:
        rows = [row[:7] + row[8:] for row in rows]
    return _write_tsv(tmp_path / "MMBench_DEV_EN.tsv", header, rows)


def test_mmbench_decodes_images_and_maps_options(tmp_path, encoded_image):
    samples = load_mmbench(_mmbench(tmp_path, encoded_image))
    assert [s.id for s in samples] == ["0", "1", "1000001"]
    first, second, copy = samples
    assert first.question == "Which color is\nshown?" and first.context == "The image is plain."
    assert first.choices == ("red", "blue", "green") and first.answers == ("A",) and first.task == "mmbench"
    assert first.extra == {"category": "color", "l2-category": "fine"}
    assert second.choices == ("apple", "stone") and second.context == ""
    image = second.images[0]
    assert isinstance(image, Image.Image) and image.format == "JPEG" and image.size == (4, 3)
    assert copy.images[0].tobytes() == first.images[0].tobytes()  # the image column refers to row "0"
    assert copy.answers == ("B",)
    assert [s.id for s in load_mmbench(tmp_path / "MMBench_DEV_EN.tsv", limit=1)] == ["0"]


def test_mmbench_test_split_without_answers(tmp_path, encoded_image):
    header = [c for c in _MMBENCH_HEADER if c != "answer"]
    samples = load_mmbench(_mmbench(tmp_path, encoded_image, header=header, answer=False))
    assert [s.answers for s in samples] == [(), (), ()]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("answer", "D", r"row 0 \(index 0\) has answer 'D', not one of its 3 options"),
        ("B", "", r"row 0 \(index 0\) has option C after an empty option"),
        ("image", "not base64!", r"row 0 \(index 0\) column 'image' is not base64"),
        ("image", base64.b64encode(b"no image here" * 10).decode(), r"row 0 \(index 0\) column 'image' holds image"),
    ],
    ids=["answer-not-an-option", "option-gap", "not-base64", "not-an-image"],
)
def test_mmbench_bad_rows(tmp_path, encoded_image, column, value, message):
    path = _mmbench(tmp_path, encoded_image)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    rows[1][rows[0].index(column)] = value
    _write_tsv(path, rows[0], rows[1:])
    with pytest.raises(ValueError, match=message):
        load_mmbench(path)


def test_mmbench_missing_file_and_column(tmp_path, encoded_image):
    with pytest.raises(FileNotFoundError, match="MMBench_DEV_CN.tsv"):
        load_mmbench(tmp_path / "MMBench_DEV_CN.tsv")
    header = [c if c != "question" else "questoin" for c in _MMBENCH_HEADER]
    with pytest.raises(ValueError, match=r"MMBench_DEV_EN.tsv: row 0 \(index 0\) has no key 'question'"):
        load_mmbench(_mmbench(tmp_path, encoded_image, header=header))


# --- MMMU --------------------------------------------------------------------------------------------------


def _mmmu_rows(encoded_image):
    def image(color):
        return {"bytes": encoded_image("PNG", color), "path": "x.png"}

    blank = {f"image_{k}": None for k in range(1, 8)}
    return [
        {**blank, "id": "validation_Art_1", "question": "Compare <image 2> with <image 1>. Which is older?",
         "options": "['<image 1>', '<image 2>', 'Both']", "answer": "B", "question_type": "multiple-choice",
         "image_1": image((255, 0, 0)), "image_2": image((0, 255, 0)), "subfield": "Art History"},
        {**blank, "id": "validation_Art_2", "question": "How many columns are there?", "options": "[]",
         "answer": "12", "question_type": "open", "image_1": image((0, 0, 255)), "subfield": "Design"},
        {**blank, "id": "validation_Art_3", "question": "What does <image 3> show?", "options": "['A cat', 'A dog']",
         "answer": "A", "question_type": "multiple-choice", "image_3": image((9, 9, 9)), "subfield": "Design"},
    ]  # fmt: skip


def _write_parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {
        key: pa.array(
            [row.get(key) for row in rows],
            type=image_type if key == "decoded_image" or key.startswith("image_") else None,
        )
        for key in rows[0]
    }
    pq.write_table(pa.table(columns), path)
    return path


def test_mmmu_parquet_images_in_order_of_reference(tmp_path, encoded_image):
    rows = _mmmu_rows(encoded_image)
    _write_parquet(tmp_path / "Art" / "validation-00000-of-00001.parquet", rows[:2])
    _write_parquet(tmp_path / "Design" / "validation-00000-of-00001.parquet", rows[2:])
    _write_parquet(tmp_path / "Art" / "dev-00000-of-00001.parquet", rows[:1])
    samples = load_mmmu(tmp_path)
    assert [s.id for s in samples] == ["validation_Art_1", "validation_Art_2", "validation_Art_3"]
    first, open_question, third = samples
    assert [image.getpixel((0, 0)) for image in first.images] == [(0, 255, 0), (255, 0, 0)]
    assert first.question.startswith("Compare <image 2>") and first.choices == ("<image 1>", "<image 2>", "Both")
    assert first.answers == ("B",) and first.task == "mmmu" and first.extra["subfield"] == "Art History"
    assert open_question.choices == () and open_question.answers == ("12",) and len(open_question.images) == 1
    assert third.images[0].getpixel((0, 0)) == (9, 9, 9)
    assert len(load_mmmu(tmp_path, split="dev")) == 1
    assert [s.id for s in load_mmmu(tmp_path, limit=2)] == ["validation_Art_1", "validation_Art_2"]


def test_mmmu_bad_input(tmp_path, encoded_image):
    rows = _mmmu_rows(encoded_image)
    rows[2]["question"] = "What does <image 4> show?"
    _write_parquet(tmp_path / "validation-0.parquet", rows)
    with pytest.raises(ValueError, match=r"row 2 \(id validation_Art_3\) refers to <image 4> but 'image_4' is empty"):
        load_mmmu(tmp_path)
    for row in rows:
        del row["answer"]
    _write_parquet(tmp_path / "validation-0.parquet", rows)
    with pytest.raises(ValueError, match=r"validation-0.parquet: row 0 \(id validation_Art_1\) has no key 'answer'"):
        load_mmmu(tmp_path)
    with pytest.raises(FileNotFoundError, match="split 'test'"):
        load_mmmu(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_mmmu(tmp_path / "no_such_dir")


def test_missing_optional_packages_raise_a_clear_import_error(tmp_path, monkeypatch):
    (tmp_path / "parquet").mkdir()
    (tmp_path / "parquet" / "validation-00000-of-00001.parquet").write_bytes(b"")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_dict.json").write_text('{"splits": ["validation"]}')
    for name in ("pyarrow", "pyarrow.parquet", "datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_mmmu(tmp_path / "parquet")
    with pytest.raises(ImportError, match="pip install datasets"):
        load_mathvista(tmp_path / "saved")


def test_mmmu_from_save_to_disk(tmp_path, encoded_image):
    datasets = pytest.importorskip("datasets")
    rows = _mmmu_rows(encoded_image)
    features = {key: datasets.Image() if key.startswith("image_") else datasets.Value("string") for key in rows[0]}
    data = datasets.Dataset.from_list(rows, features=datasets.Features(features))
    datasets.DatasetDict({"validation": data}).save_to_disk(str(tmp_path / "mmmu"))
    samples = load_mmmu(tmp_path / "mmmu")
    assert [s.id for s in samples] == ["validation_Art_1", "validation_Art_2", "validation_Art_3"]
    assert [image.getpixel((0, 0)) for image in samples[0].images] == [(0, 255, 0), (255, 0, 0)]
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_mmmu(tmp_path / "mmmu", split="dev")


# --- MathVista ---------------------------------------------------------------------------------------------


def _mathvista_records():
    return {
        "1": {"question": "What is the length?", "image": "images/1.jpg", "choices": None, "unit": "cm",
              "precision": 1.0, "answer": "1.2", "question_type": "free_form", "answer_type": "float", "pid": "1",
              "metadata": {"task": "geometry problem solving"}, "query": "Hint: ... Question: What is the length?"},
        "2": {"question": "Which is the largest?", "image": "images/2.jpg", "choices": ["3", "7", "5"],
              "unit": None, "precision": None, "answer": "7", "question_type": "multi_choice",
              "answer_type": "text", "pid": "2", "metadata": {}, "query": "..."},
    }  # fmt: skip


def test_mathvista_json_maps_answers_to_letters(tmp_path, write_image):
    (tmp_path / "annot_testmini.json").write_text(json.dumps(_mathvista_records()))
    for pid in ("1", "2"):
        write_image(tmp_path / "images" / f"{pid}.jpg")
    samples = load_mathvista(tmp_path)  # the directory holding annot_testmini.json and images/
    assert [s.id for s in samples] == ["1", "2"]
    free, choice = samples
    assert free.answers == ("1.2",) and free.choices == () and free.extra["precision"] == 1.0
    assert free.images == (tmp_path / "images" / "1.jpg",) and free.images[0].is_file()
    assert choice.choices == ("3", "7", "5") and choice.answers == ("B",) and choice.task == "mathvista"
    assert load_mathvista(tmp_path / "annot_testmini.json", limit=1)[0].id == "1"


def test_mathvista_bad_input(tmp_path, write_image, caplog):
    records = _mathvista_records()
    path = tmp_path / "testmini.json"
    path.write_text(json.dumps(records))
    write_image(tmp_path / "images" / "2.jpg")
    with pytest.raises(FileNotFoundError, match="1.jpg"):
        load_mathvista(path)
    with caplog.at_level(logging.WARNING, logger="vlmkit.eval.benchmarks.multiple_choice"):
        assert [s.id for s in load_mathvista(path, skip_missing_images=True)] == ["2"]
    assert "skipped 1 question(s)" in caplog.text
    records["2"]["answer"] = "9"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"testmini.json: record 1 \(pid 2\) has answer '9', which is none"):
        load_mathvista(path, skip_missing_images=True)
    del records["2"]["question_type"]
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"record 1 \(pid 2\) has no key 'question_type'"):
        load_mathvista(path, skip_missing_images=True)
    with pytest.raises(FileNotFoundError, match="test.json"):
        load_mathvista(tmp_path / "test.json")


def test_mathvista_parquet_with_decoded_images(tmp_path, encoded_image):
    rows = [
        {**record, "decoded_image": {"bytes": encoded_image("PNG", (1, 2, 3)), "path": record["image"]}}
        for record in _mathvista_records().values()
    ]
    for row in rows:
        row["metadata"] = json.dumps(row["metadata"])
    _write_parquet(tmp_path / "data" / "testmini-00000-of-00001-725687bf7a18d64b.parquet", rows)
    samples = load_mathvista(tmp_path)
    assert [s.id for s in samples] == ["1", "2"] and samples[1].answers == ("B",)
    assert isinstance(samples[0].images[0], Image.Image) and samples[0].images[0].getpixel((0, 0)) == (1, 2, 3)
