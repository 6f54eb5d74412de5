"""Small synthetic interaction logs shared by the foundation tests."""

import numpy as np
import pandas as pd

from sidrec.data import RawData


def cyclic_raw(n_users: int = 60, n_items: int = 12, length: int = 8, seed: int = 0) -> RawData:
    """Each user walks the catalogue in order from a random start: item i is followed by i + 1."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(n_users):
        start = rng.integers(n_items)
        for step in range(length):
            users.append(f"u{user}")
            items.append(f"i{(start + step) % n_items:02d}")
            times.append(step)
    inter = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.array(times, float)})
    meta = pd.DataFrame({"item_id": [f"i{i:02d}" for i in range(n_items)],
                         "title": [f"item number {i}" for i in range(n_items)]})
    return RawData(inter, meta)
