"""Recommenders: baselines and generative models, all behind one `Recommender` interface."""

from sidrec.models.asymrec import AsymRec
from sidrec.models.base import MODELS, Recommender, build_model
from sidrec.models.popularity import Popularity
from sidrec.models.sasrec import SASRec
from sidrec.models.tiger import TIGER

__all__ = ["AsymRec", "MODELS", "Popularity", "Recommender", "SASRec", "TIGER", "build_model"]
