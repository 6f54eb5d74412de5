"""Item tokenizers: `ItemEmbeddings` -> `SemanticIDs`."""

from sidrec.tokenizers.api import load_tokenized, tokenize
from sidrec.tokenizers.base import TOKENIZERS, Tokenizer, build_tokenizer
from sidrec.tokenizers.collisions import resolve_collisions
from sidrec.semantic_ids import SemanticIDs

__all__ = ["SemanticIDs", "TOKENIZERS", "Tokenizer", "build_tokenizer", "load_tokenized", "resolve_collisions", "tokenize"]
