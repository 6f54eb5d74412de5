"""Trains a tiny SASRec for one epoch and saves its weights; run under torchrun or alone."""

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])  # tests/ for conftest's data helper
from synthetic import cyclic_raw  # noqa: E402

from sidrec.config import TrainConfig  # noqa: E402
from sidrec.data import build_dataset  # noqa: E402
from sidrec.io import save_tensors  # noqa: E402
from sidrec.models import build_model  # noqa: E402
from sidrec.training import Trainer  # noqa: E402
from sidrec.training.distributed import leave_process_group, rank_and_world  # noqa: E402


def train_once(out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = build_dataset(cyclic_raw(n_users=24, length=7), "cyclic")
    model = build_model("sasrec", {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.0,
                                   "max_len": 8}, ds.n_items)
    Trainer(model, TrainConfig(epochs=2, batch_size=8, lr=1e-2, progress=False)).fit(model.make_batches(ds, 8))
    if rank_and_world()[0] == 0:
        save_tensors(out, model.state_dict())
    leave_process_group()


if __name__ == "__main__":
    train_once(sys.argv[1])
