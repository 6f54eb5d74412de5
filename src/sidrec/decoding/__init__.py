"""Decoding semantic IDs back into catalogue items: prefix trie, constrained beam search, exact scoring."""

from sidrec.decoding.beam_search import constrained_beam_search
from sidrec.decoding.exact import exact_item_scores, exact_top_k
from sidrec.decoding.trie import SIDTrie

__all__ = ["SIDTrie", "constrained_beam_search", "exact_item_scores", "exact_top_k"]
