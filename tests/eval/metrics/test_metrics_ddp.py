import json

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from vlmkit.eval.metrics import ANLS, BLEU4, CIDErD, VQAAccuracy

VQA_PREDICTIONS = ["Two", "a dog.", "yes", "blue", "dont", "3"]
VQA_REFERENCES = [
    ["2"] * 10,
    ["dog"] * 3 + ["cat"] * 7,
    ["yes"] + ["no"] * 9,
    ["red"] * 10,
    ["don't"] * 2 + ["no"] * 8,
    ["3", "three", "4"],
]
CAPTIONS = ["A man riding a wave.", "A cat on a laptop.", "Two giraffes in a field.", "A red bus.", "A dog."]
CAPTION_REFERENCES = [
    ["A man surfing a big wave.", "A surfer riding a wave on a surfboard.", "Someone surfs in the ocean."],
    ["A cat laying on a laptop keyboard.", "An orange cat sitting on a laptop."],
    ["Two giraffes standing in a grassy field.", "A pair of giraffes near trees.", "Giraffes in the wild."],
    ["A red double-decker bus.", "A big red bus on a street."],
    ["A dog sleeping on a couch.", "A brown dog on a sofa.", "The dog's on the couch."],
]


def _build():
    return {"vqa": VQAAccuracy(), "cider": CIDErD(), "bleu": BLEU4(), "anls": ANLS()}


def _update(metrics, vqa, captions):
    metrics["vqa"].update(*vqa)
    metrics["anls"].update(*vqa)
    metrics["cider"].update(*captions)
    metrics["bleu"].update(*captions)


def _worker(rank, world_size, path, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world_size)
    metrics, empty_rank = _build(), CIDErD()
    vqa = (VQA_PREDICTIONS[rank::world_size], VQA_REFERENCES[rank::world_size])
    captions = (CAPTIONS[rank::world_size], CAPTION_REFERENCES[rank::world_size])
    _update(metrics, vqa, captions)
    if rank == 0:  # rank 1 never updates this one
        empty_rank.update(CAPTIONS, CAPTION_REFERENCES)
    values = {name: float(metric.compute()) for name, metric in metrics.items()}
    values["cider_empty_rank"] = float(empty_rank.compute())
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(values, f)
    dist.destroy_process_group()


@pytest.mark.integration
def test_synced_compute_equals_single_process(tmp_path):
    single = _build()
    _update(single, (VQA_PREDICTIONS, VQA_REFERENCES), (CAPTIONS, CAPTION_REFERENCES))
    expected = {name: float(metric.compute()) for name, metric in single.items()}
    expected["cider_empty_rank"] = expected["cider"]
    assert expected["cider"] > 0 and 0 < expected["vqa"] < 1

    mp.spawn(_worker, args=(2, tmp_path / "pg", tmp_path), nprocs=2)

    for rank in range(2):
        values = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert values == pytest.approx(expected, abs=1e-9), f"rank {rank}"
