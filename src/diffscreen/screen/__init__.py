"""Screening runs: classify every frame and keep the hits (:func:`screen`)."""

from diffscreen.screen.runner import SCORE_COLUMNS, CNNMethod, FrameDecision, ScreenSummary, list_entry, screen

__all__ = ["SCORE_COLUMNS", "CNNMethod", "FrameDecision", "ScreenSummary", "list_entry", "screen"]
