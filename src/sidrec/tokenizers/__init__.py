"""Item tokenizers: `ItemEmbeddings` -> `SemanticIDs`."""

from sidrec.tokenizers.semantic_ids import SemanticIDs

__all__ = ["SemanticIDs"]
