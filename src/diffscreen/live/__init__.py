"""Screening live at the beamline (issue 14): follow a folder as a detector writes it (:mod:`.watch`), read a
detector's SIMPLON stream v2 (:mod:`.stream`), grow the outputs in whole chunks while the run goes on
(:mod:`.loop`), and show a live dashboard (:mod:`.dashboard`).

Layering: above :mod:`diffscreen.screen` and :mod:`diffscreen.explain`; only the command line imports this
package.  Nothing is imported here, so each module loads only what it needs.  See docs/live.md.
"""
