"""Semantic-ID quality metrics."""

import torch

from sidrec.tokenizers.metrics import prefix_agreement


def test_prefix_agreement_counts_next_item_pairs_within_users_only():
    codes = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    # user A: 0 -> 1 -> 2; user B: 3 -> 2. Pairs: (0,1) share code 0; (1,2) share nothing; (3,2) share code 1.
    # The pair (2, 3) across the users' boundary must not count.
    items, offsets = torch.tensor([0, 1, 2, 3, 2]), torch.tensor([0, 3, 5])
    depth1, depth2 = prefix_agreement(codes, items, offsets)
    assert depth1 == {"depth": 1, "next_item": 2 / 3, "chance": 0.5}
    assert depth2["next_item"] == 0.0 and depth2["chance"] == 0.25
