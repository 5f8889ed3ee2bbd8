"""Screening: classify frames in batches and keep the hits (the main job)."""

from diffscreen.screen.runner import SCORE_COLUMNS, ScreenSummary, list_entry, screen

__all__ = ["SCORE_COLUMNS", "ScreenSummary", "list_entry", "screen"]
