"""Batch export: top-k recommendations for every user of a run, streamed to Parquet.

Users are processed `chunk_users` at a time and each chunk is written as its own row group, so
memory is bounded by one chunk whatever the number of users. The file is written under a temporary
name and renamed at the end: a crash never leaves a truncated export behind.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from sidrec.io import atomic_path
from sidrec.serving.catalogue import open_run
from sidrec.evaluation.protocol import rank_items

SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32())])


def export_recommendations(run_dir: str | Path, out_path: str | Path, k: int = 10, chunk_users: int = 4096,
                           exclude_history: bool = False, progress: bool = True) -> dict:
    """Write `(user_id, rank, item_id, score)` rows (rank 1 = best) for every user's whole history."""
    if k < 1 or chunk_users < 1:
        raise ValueError(f"k ({k}) and chunk_users ({chunk_users}) must be >= 1")
    start = time.perf_counter()
    served = open_run(run_dir)
    dataset, model = served.dataset, served.model
    item_ids = served.catalogue.item_ids
    max_len = served.config.eval.max_len
    rows = 0
    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer, torch.inference_mode():
        bar = tqdm(total=dataset.n_users, desc="export", unit="user", disable=not progress)
        for first in range(0, dataset.n_users, chunk_users):
            users = torch.arange(first, min(first + chunk_users, dataset.n_users))
            histories = dataset.windows(dataset.offsets[users + 1], dataset.offsets[users], max_len)
            items, scores = rank_items(model, histories, k, exclude_history)
            keep = (items >= 0).numpy()  # slots emptied by exclude_history when the catalogue runs out
            user_col = np.repeat(dataset.user_ids[users.numpy()].astype(str), items.shape[1])
            rank_col = np.tile(np.arange(1, items.shape[1] + 1, dtype=np.int32), len(users))
            flat = keep.ravel()
            writer.write_table(pa.table({"user_id": user_col[flat], "rank": rank_col[flat],
                                         "item_id": item_ids[items.numpy().ravel()[flat]],
                                         "score": scores.numpy().ravel()[flat].astype(np.float32)}, schema=SCHEMA))
            rows += int(flat.sum())
            bar.update(len(users))
        bar.close()
    return {"path": str(out_path), "users": dataset.n_users, "rows": rows, "k": k,
            "exclude_history": exclude_history, "seconds": round(time.perf_counter() - start, 3)}
