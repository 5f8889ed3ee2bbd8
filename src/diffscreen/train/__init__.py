"""Training: labelled samples, class-balanced batches, the SGD schedule, checkpoints."""

from diffscreen.train.data import FrameDataset, Sample, collect_samples, split_samples
from diffscreen.train.loop import TrainConfig, TrainResult, learning_rate, train_model
from diffscreen.train.engine import ClassBalancedSampler

__all__ = [
    "FrameDataset",
    "Sample",
    "collect_samples",
    "split_samples",
    "TrainConfig",
    "TrainResult",
    "learning_rate",
    "train_model",
    "ClassBalancedSampler",
]
