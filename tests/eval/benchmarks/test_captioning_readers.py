import json
import logging

import pytest

from vlmkit.eval.benchmarks import load_coco_captions


def _official(root, write_image):
    images = [
        {"id": 391895, "file_name": "COCO_val2014_000000391895.jpg", "height": 3, "width": 4},
        {"id": 522418, "file_name": "COCO_val2014_000000522418.jpg", "height": 3, "width": 4},
    ]
    annotations = [
        {"image_id": 391895, "id": 1, "caption": "A man riding a bike. "},
        {"image_id": 522418, "id": 2, "caption": "A woman cutting a cake."},
        {"image_id": 391895, "id": 3, "caption": "A cyclist on a dirt road.\n"},
    ]
    afile = root / "captions_val2014.json"
    afile.write_text(json.dumps({"info": {}, "images": images, "licenses": [], "annotations": annotations}))
    for image in images:
        write_image(root / "val2014" / image["file_name"])
    return afile, root / "val2014"


def _karpathy(root, write_image):
    def entry(cocoid, folder, split, captions):
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        write_image(root / "coco" / folder / name)
        sentences = [{"raw": c, "tokens": c.lower().split(), "sentid": k} for k, c in enumerate(captions)]
        return {"filepath": folder, "filename": name, "split": split, "sentences": sentences, "cocoid": cocoid}

    images = [
        entry(9, "train2014", "train", ["A plate of food."]),
        entry(391895, "val2014", "test", ["A man riding a bike.", "A cyclist."]),
        entry(522418, "val2014", "test", ["A woman cutting a cake."]),
        entry(184613, "val2014", "val", ["A boy and a cow."]),
    ]
    afile = root / "dataset_coco.json"
    afile.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return afile, root / "coco"


def test_official_layout_one_sample_per_image_with_all_captions(tmp_path, write_image):
    afile, images = _official(tmp_path, write_image)
    samples = load_coco_captions(afile, images)
    assert [s.id for s in samples] == ["391895", "522418"]
    assert samples[0].answers == ("A man riding a bike.", "A cyclist on a dirt road.")
    assert samples[0].question == "" and samples[0].task == "coco"
    assert samples[0].images == (images / "COCO_val2014_000000391895.jpg",) and samples[0].images[0].is_file()
    assert [s.id for s in load_coco_captions(afile, images, limit=1)] == ["391895"]


def test_karpathy_layout_selects_the_split(tmp_path, write_image):
    afile, root = _karpathy(tmp_path, write_image)
    test = load_coco_captions(afile, root)
    assert [s.id for s in test] == ["391895", "522418"]
    assert test[0].answers == ("A man riding a bike.", "A cyclist.")
    assert test[0].images == (root / "val2014" / "COCO_val2014_000000391895.jpg",)
    assert [s.id for s in load_coco_captions(afile, root, split="val")] == ["184613"]
    assert len(load_coco_captions(afile, root, split=None)) == 4
    assert [s.id for s in load_coco_captions(afile, root, limit=1)] == ["391895"]
    flat = load_coco_captions(afile, root / "val2014", split="test")  # a flat directory of the images
    assert flat[1].images == (root / "val2014" / "COCO_val2014_000000522418.jpg",)


def test_bad_input(tmp_path, write_image, caplog):
    afile, images = _official(tmp_path, write_image)
    with pytest.raises(FileNotFoundError, match="captions_test.json"):
        load_coco_captions(tmp_path / "captions_test.json", images)
    data = json.loads(afile.read_text())
    (images / data["images"][1]["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000522418.jpg"):
        load_coco_captions(afile, images)
    with caplog.at_level(logging.WARNING, logger="vlmkit.eval.benchmarks.captioning"):
        assert [s.id for s in load_coco_captions(afile, images, skip_missing_images=True)] == ["391895"]
    assert "skipped 1 question(s)" in caplog.text
    del data["annotations"][2]["caption"]
    afile.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"captions_val2014.json: annotation 2 \(image_id 391895\) has no key 'caption'"
    ):
        load_coco_captions(afile, images)
    afile.write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(ValueError, match="neither a COCO captions file"):
        load_coco_captions(afile, images)


def test_karpathy_missing_key(tmp_path, write_image):
    afile, root = _karpathy(tmp_path, write_image)
    data = json.loads(afile.read_text())
    del data["images"][2]["sentences"][0]["raw"]
    afile.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"dataset_coco.json: image record 2 \(cocoid 522418\) sentence 0 has no key 'raw'"
    ):
        load_coco_captions(afile, root)
