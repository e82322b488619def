"""Difficulty routing: send a prompt to the strong model only when a router's score says
the weak one is likely to fail, with RouteLLM's cost/quality metrics to pick the threshold."""

from llmroute.difficulty.artifact import load_router, save_router
from llmroute.difficulty.data import LabelledPrompts, read_labels, split
from llmroute.difficulty.metrics import (
    Curve,
    apgr,
    cpt,
    knee,
    oracle_curve,
    pgr,
    quality_curve,
    random_curve,
    report,
    threshold_for_share,
)
from llmroute.difficulty.routers import DifficultyRouter
from llmroute.difficulty.train import DEFAULT_ROUTER, MIN_ROWS, train_router

__all__ = [
    "DEFAULT_ROUTER",
    "MIN_ROWS",
    "Curve",
    "DifficultyRouter",
    "LabelledPrompts",
    "apgr",
    "cpt",
    "knee",
    "load_router",
    "oracle_curve",
    "pgr",
    "quality_curve",
    "random_curve",
    "read_labels",
    "report",
    "save_router",
    "split",
    "threshold_for_share",
    "train_router",
]
