"""The learning-rate schedule: linear warm-up, then a half cosine (OpenCLIP's `cosine_lr`)."""

from __future__ import annotations

import math

import torch

from torchclip.train.config import TrainConfig


def cosine_lr(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr`, then a half cosine down to `min_lr` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> float:
    """Give every parameter group the schedule's rate for `step`; returns it."""
    lr = cosine_lr(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
