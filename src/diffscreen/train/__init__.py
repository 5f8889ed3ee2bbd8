"""Training: labelled samples, class-balanced batches, the one engine (:mod:`diffscreen.train.engine`), its recipes."""

from diffscreen.train.data import FrameDataset, Sample, collect_samples, split_samples
from diffscreen.train.engine import ClassBalancedSampler, TrainConfig, TrainResult, learning_rate
from diffscreen.train.loop import train_model

__all__ = ["FrameDataset", "Sample", "collect_samples", "split_samples", "TrainConfig", "TrainResult", "learning_rate",
           "train_model", "ClassBalancedSampler"]
