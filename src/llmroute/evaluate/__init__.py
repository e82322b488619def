"""Offline evaluation: route accuracy on labelled data, registry comparison, and
building calibrated registries from labelled examples."""

from llmroute.evaluate.calibrate import ThresholdChoice, choose_threshold
from llmroute.evaluate.data import LabelledRow, read_labelled, stratified_split
from llmroute.evaluate.intent_metrics import DEFAULT, IntentReport, RouteMetrics, intent_report
from llmroute.evaluate.run import Comparison, compare_reports, evaluate_router

__all__ = [
    "DEFAULT",
    "Comparison",
    "IntentReport",
    "LabelledRow",
    "RouteMetrics",
    "ThresholdChoice",
    "choose_threshold",
    "compare_reports",
    "evaluate_router",
    "intent_report",
    "read_labelled",
    "stratified_split",
]
