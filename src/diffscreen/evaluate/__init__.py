"""Evaluation: confusion matrices and metrics (Ke et al. 2018, Table 3)."""

from diffscreen.evaluate.metrics import (
    HIT_GROUP,
    EvaluationReport,
    binary_metrics,
    confusion_matrix,
    evaluate_labels,
    to_binary,
)

__all__ = ["HIT_GROUP", "EvaluationReport", "binary_metrics", "confusion_matrix", "evaluate_labels", "to_binary"]
