"""Item encoders: every catalogue becomes an `ItemEmbeddings` artifact.

Model libraries (sentence-transformers, transformers, EfficientNet) are imported only when an
encoder first needs its model, so importing this package stays cheap.
"""

from sidrec.features.base import ENCODERS, ItemEncoder, build_encoder, encoder_requirements
from sidrec.features.card import CardEncoder, CardLayout, nearest_neighbours, render_units, write_units
from sidrec.features.embeddings import ItemEmbeddings
from sidrec.features.fusion import FusionEncoder, fuse
from sidrec.features.image import ImageEncoder, load_backend
from sidrec.features.text import TextEncoder, render_texts

__all__ = [
    "ENCODERS",
    "CardEncoder",
    "CardLayout",
    "FusionEncoder",
    "ImageEncoder",
    "ItemEmbeddings",
    "ItemEncoder",
    "TextEncoder",
    "build_encoder",
    "encoder_requirements",
    "fuse",
    "load_backend",
    "nearest_neighbours",
    "render_texts",
    "render_units",
    "write_units",
]
