import pytest
import torch

from sidrec.decoding.trie import SIDTrie
from sidrec.semantic_ids import SemanticIDs


def random_codes(n: int, sizes: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, s, (n,), generator=g) for s in sizes], 1)
    codes = torch.unique(codes, dim=0)
    return codes[torch.randperm(len(codes), generator=g)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookup_returns_each_item_and_rejects_unknown_codes(seed):
    sizes = [5, 4, 3]
    codes = random_codes(40, sizes, seed)
    trie = SIDTrie(codes, sizes)
    assert torch.equal(trie.lookup(codes), torch.arange(len(codes)))
    known = {tuple(c) for c in codes.tolist()}
    every = torch.cartesian_prod(*[torch.arange(s) for s in sizes])
    found = trie.lookup(every)
    expected = torch.tensor([tuple(c) in known for c in every.tolist()])
    assert torch.equal(found >= 0, expected)
    assert trie.lookup(torch.tensor([[0, 0, 7], [-1, 0, 0]])).tolist() == [-1, -1]


def test_allowed_masks_match_a_dict_trie_for_every_prefix():
    sizes = [4, 6, 2]
    codes = random_codes(50, sizes, seed=3)
    trie = SIDTrie(codes, sizes)
    nodes = torch.zeros(len(codes), dtype=torch.long)
    for level in range(len(sizes)):
        allowed = trie.allowed(level, nodes)  # one gather for all items' prefixes at once
        for row, code in zip(allowed.tolist(), codes.tolist()):
            prefix = code[:level]
            truth = {c[level] for c in codes.tolist() if c[:level] == prefix}
            assert {i for i, ok in enumerate(row) if ok} == truth
        nodes = trie.next_nodes(level, nodes).gather(1, codes[:, level : level + 1]).squeeze(1)
    assert torch.equal(nodes, torch.arange(len(codes)))  # the last level maps to item indices


def test_parents_and_codes_rebuild_every_node():
    sizes = [3, 3, 3]
    codes = random_codes(20, sizes, seed=4)
    trie = SIDTrie(codes, sizes)
    for level in range(trie.n_levels):
        child = trie.children[level][trie.parents[level], trie.codes_at[level]]
        assert torch.equal(child.long(), torch.arange(child.numel()))


def test_duplicate_codes_are_rejected_with_the_items_named():
    codes = torch.tensor([[0, 1], [1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"not unique.*items \[0, 2\]"):
        SIDTrie(codes, [2, 2])


def test_bad_shapes_and_codes_are_rejected():
    with pytest.raises(ValueError, match="codebook_sizes"):
        SIDTrie(torch.zeros(3, 2, dtype=torch.long), [2, 2, 2])
    with pytest.raises(ValueError, match="outside"):
        SIDTrie(torch.tensor([[0, 5]]), [2, 2])


def test_from_semantic_ids_carries_token_offsets():
    sids = SemanticIDs(random_codes(10, [4, 4]), [4, 4])
    trie = SIDTrie.from_semantic_ids(sids)
    assert trie.token_offsets == [2, 6]
    assert trie.n_nodes(1) == len(torch.unique(sids.codes[:, 0]))


def test_a_code_one_past_its_codebook_is_unknown_even_when_its_neighbour_exists():
    sizes = [2, 3]
    trie = SIDTrie(torch.cartesian_prod(torch.arange(2), torch.arange(3)), sizes)  # every code is an item
    assert trie.lookup(torch.tensor([[1, 3], [2, 0], [1, 2]])).tolist() == [-1, -1, 5]


def test_the_duplicate_named_is_a_real_duplicate_and_the_count_is_of_items():
    codes = torch.tensor([[0, 0], [1, 1], [1, 1], [0, 1], [1, 1]])  # the repeated code is not the smallest
    with pytest.raises(ValueError, match=r"2 items share a code.*items \[1, 2, 4\] all have code \[1, 1\]"):
        SIDTrie(codes, [2, 2])
    many = torch.tensor([[1, 0]] * 7 + [[0, 0]])
    with pytest.raises(ValueError, match=r"6 items share a code.*items \[0, 1, 2, 3, 4\] all"):
        SIDTrie(many, [2, 2])


def test_the_root_has_one_row_absent_children_are_minus_one_and_offsets_default_to_zero():
    trie = SIDTrie(torch.tensor([[0, 1]]), [2, 3])
    assert trie.children[0].shape == (1, 2) and trie.children[0][0].tolist() == [0, -1]
    assert trie.children[1].tolist() == [[-1, 0, -1]] and trie.token_offsets == [0, 0]


def test_an_empty_catalogue_and_a_code_equal_to_its_codebook_size_are_refused():
    with pytest.raises(ValueError, match=r"^cannot build a trie over an empty catalogue \(codes has 0 rows\)$"):
        SIDTrie(torch.empty(0, 2, dtype=torch.long), [2, 2])
    with pytest.raises(ValueError, match=r"^trie codes: a code lies outside its level's codebook$"):
        SIDTrie(torch.tensor([[0, 2]]), [2, 2])
