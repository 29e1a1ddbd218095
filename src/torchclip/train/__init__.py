"""Contrastive training and fine-tuning: `train(TrainConfig(...))`, the `ClipLoss`, data sources and recipes.

`torchclip train` and `torchrun --nproc_per_node N -m torchclip.train` drive the same code.
"""

from torchclip.train.config import TrainConfig
from torchclip.train.loss import ClipLoss
from torchclip.train.trainer import train

__all__ = ["ClipLoss", "TrainConfig", "train"]
