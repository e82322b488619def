"""The reasoning gate's learned scorer: labelled data, training and the artifact
(docs/reasoning.md)."""

from llmroute.reasoning.artifact import (
    ReasoningScorer,
    builtin_scorer_dir,
    load_scorer,
    read_scorer_meta,
    save_scorer,
)
from llmroute.reasoning.labelled import LABELS, ReasoningData, read_reasoning, split_reasoning
from llmroute.reasoning.train import binary_metrics, roc_auc, train_scorer

__all__ = [
    "LABELS",
    "ReasoningData",
    "ReasoningScorer",
    "binary_metrics",
    "builtin_scorer_dir",
    "load_scorer",
    "read_reasoning",
    "read_scorer_meta",
    "roc_auc",
    "save_scorer",
    "split_reasoning",
    "train_scorer",
]
