"""Evaluation: confusion matrices and metrics (Ke et al. 2018, Table 3), spot-by-spot peak matching."""

from diffscreen.evaluate.metrics import (
    HIT_GROUP,
    EvaluationReport,
    binary_metrics,
    confusion_matrix,
    evaluate_labels,
    to_binary,
)
from diffscreen.evaluate.peaks import PeakMatch, match_peaks

__all__ = ["HIT_GROUP", "EvaluationReport", "binary_metrics", "confusion_matrix", "evaluate_labels", "to_binary", "PeakMatch", "match_peaks"]
