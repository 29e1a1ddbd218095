"""The optimiser: AdamW, with weight decay only where it belongs, and gradient clipping."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchclip.train.config import TrainConfig


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases, the temperature and embedding tables are not weight-decayed (as OpenCLIP does)."""
    return param.ndim < 2 or "embedding" in name or "logit_scale" in name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters in two groups: decayed, and not (see `no_decay`)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Scale the gradients down to at most `max_norm` (None or 0: leave them); their norm before, or NaN."""
    if not max_norm:
        return float("nan")
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
