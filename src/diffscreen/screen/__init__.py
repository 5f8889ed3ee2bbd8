"""Screening runs: classify every frame and keep the hits (:func:`screen`), or label CDI frames (:func:`screen_cdi`)."""

from diffscreen.screen.method import CDIMethod, CNNMethod, FrameDecision, ScreeningMethod, load_cdi_model
from diffscreen.screen.outputs import CDIScreenSummary, ScreenSummary
from diffscreen.screen.runner import SCORE_COLUMNS, list_entry, screen, screen_cdi

__all__ = ["SCORE_COLUMNS", "CDIMethod", "CDIScreenSummary", "CNNMethod", "FrameDecision", "ScreeningMethod",
           "ScreenSummary", "list_entry", "load_cdi_model", "screen", "screen_cdi"]
