"""The DiffraNet 5-class task (Souza et al. 2019; Nawaz et al. 2022 §3.1, §3.5): classes and input recipe.

A DiffraNet model (``train --task diffranet``, AlexNet by default) gives one
softmax probability per class of :data:`DIFFRANET_CLASSES`; a frame's label
is the most probable class, and it is kept (a hit) when that class is weak,
good or strong (Nawaz §4 merges blank and no-crystal into miss).  How
simulated frames get these labels is :mod:`diffscreen.simulate.diffranet`.
"""

from __future__ import annotations

from diffscreen.errors import ConfigError

__all__ = ["DIFFRANET_CLASSES", "DIFFRANET_HITS", "DIFFRANET_INPUT_SIZE", "hit_miss", "is_diffranet_model",
           "diffranet_preprocess_config"]

#: The five classes, in the order of a model's outputs (Nawaz Table 3).
DIFFRANET_CLASSES: tuple[str, ...] = ("blank", "no-crystal", "weak", "good", "strong")
#: The classes that hold a crystal's diffraction: a hit when merged to hit/miss (Nawaz §4).
DIFFRANET_HITS: tuple[str, ...] = ("weak", "good", "strong")
#: AlexNet's input side (Krizhevsky et al. 2012; Nawaz Fig. 4).
DIFFRANET_INPUT_SIZE = 227


def hit_miss(labels) -> list[str]:
    """Merge DiffraNet classes: blank, no-crystal → ``"miss"``; weak, good, strong → ``"hit"`` (Nawaz §4).

    Raises
    ------
    ConfigError
        A label that is not a DiffraNet class.
    """
    out = []
    for v in labels:
        if v not in DIFFRANET_CLASSES:
            raise ConfigError(f"{v!r} is not a DiffraNet class {DIFFRANET_CLASSES}")
        out.append("hit" if v in DIFFRANET_HITS else "miss")
    return out


def is_diffranet_model(class_names) -> bool:
    """Whether a model's outputs are the five DiffraNet classes, in order."""
    return tuple(class_names) == DIFFRANET_CLASSES


def diffranet_preprocess_config(input_size: int = DIFFRANET_INPUT_SIZE):
    """The :class:`~diffscreen.preprocess.PreprocessConfig` of DiffraNet inputs of side ``input_size`` (Nawaz §3.5).

    The reciprocal-space window of Ke's 720-pixel crop (``s_per_px × 720 / input_size``), centred (no shift).
    """
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.preprocess.geometry import DEFAULT_S_PER_PX

    return PreprocessConfig(out_size=input_size, s_per_px=DEFAULT_S_PER_PX * 720 / input_size, max_shift=0)
