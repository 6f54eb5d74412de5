"""Batch export: every user's top-k streamed to Parquet, chunk by chunk, equal to top_k."""

import math

import pyarrow.parquet as pq
import pytest
import torch

from sidrec import pipeline
from sidrec.evaluation.protocol import top_k
from sidrec.serving import export
from sidrec.serving.export import export_recommendations
from sidrec.evaluation.protocol import rank_items


@pytest.mark.parametrize("exclude", [False, True])
def test_export_matches_top_k_in_chunks(sasrec_run, tmp_path, exclude):
    config, dataset, model = pipeline.load_run(sasrec_run)
    out = tmp_path / "recs.parquet"
    summary = export_recommendations(sasrec_run, out, k=3, chunk_users=7, exclude_history=exclude, progress=False)
    assert summary["rows"] == dataset.n_users * 3 and not list(tmp_path.glob(".*"))  # no temp file left
    assert pq.ParquetFile(out).metadata.num_row_groups == math.ceil(dataset.n_users / 7)
    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["user_id", "rank", "item_id", "score"]
    histories = torch.cat([dataset.user_history(u, config.eval.max_len) for u in range(dataset.n_users)])
    expected = top_k(model, histories, 3, exclude)
    for user, group in table.groupby("user_id", sort=False):
        row = int((dataset.user_ids == user).nonzero()[0][0])
        assert group["rank"].tolist() == [1, 2, 3]
        assert group["item_id"].tolist() == [str(dataset.item_ids[i]) for i in expected[row].tolist()]
        assert group["score"].is_monotonic_decreasing


def test_failed_export_keeps_the_previous_file(sasrec_run, tmp_path, monkeypatch):
    out = tmp_path / "recs.parquet"
    out.write_bytes(b"previous export")
    with pytest.raises(ValueError, match="chunk_users"):
        export_recommendations(sasrec_run, out, chunk_users=0, progress=False)
    calls = []

    def fail_on_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("model crashed")
        return rank_items(*args)

    monkeypatch.setattr(export, "rank_items", fail_on_second_chunk)
    with pytest.raises(RuntimeError, match="model crashed"):
        export_recommendations(sasrec_run, out, chunk_users=7, progress=False)
    assert out.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["recs.parquet"]
