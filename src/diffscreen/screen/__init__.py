"""Screening runs: classify every frame and keep the hits (:func:`screen`)."""

from diffscreen.screen.method import CNNMethod, FrameDecision, ScreeningMethod
from diffscreen.screen.runner import SCORE_COLUMNS, ScreenSummary, list_entry, screen

__all__ = ["SCORE_COLUMNS", "CNNMethod", "FrameDecision", "ScreeningMethod", "ScreenSummary", "list_entry", "screen"]
