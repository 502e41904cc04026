import json
from types import SimpleNamespace

from vlmkit.training.prediction_writer import PredictionWriter


def _write(tmp_path, predictions, batch_indices):
    trainer = SimpleNamespace(log_dir=str(tmp_path), default_root_dir=str(tmp_path), is_global_zero=True, world_size=1)
    writer = PredictionWriter(num_printed=0)
    writer.write_on_epoch_end(trainer, None, predictions, batch_indices)
    return [json.loads(line) for line in writer.path.read_text().splitlines()]


def test_records_are_written_in_dataset_order_each_sample_once(tmp_path):
    # Lightning's batch indices give the order when the data sets no sample_index
    records = _write(tmp_path, [[{"prediction": "b"}, {"prediction": "a"}], [{"prediction": "c"}]], [[1, 0], [2]])
    assert records == [{"prediction": p, "sample_index": i} for i, p in enumerate("abc")]
    # a sampler that repeated sample 0 to even out the ranks: written once
    repeated = [[{"prediction": "x", "sample_index": 1}, {"prediction": "y", "sample_index": 0}]]
    repeated.append([{"prediction": "y", "sample_index": 0}])
    assert [r["prediction"] for r in _write(tmp_path, repeated, None)] == ["y", "x"]
