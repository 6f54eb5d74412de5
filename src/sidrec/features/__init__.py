"""Item encoders: every catalogue becomes an `ItemEmbeddings` artifact."""

from sidrec.features.embeddings import ItemEmbeddings

__all__ = ["ItemEmbeddings"]
