"""Evaluation stage: leave-one-out full ranking metrics, protocol and reports."""

from sidrec.evaluation.metrics import coverage, head_tail_recall, ranking_metrics, target_ranks, tail_items
from sidrec.evaluation.protocol import evaluate

__all__ = ["coverage", "evaluate", "head_tail_recall", "ranking_metrics", "tail_items", "target_ranks"]
