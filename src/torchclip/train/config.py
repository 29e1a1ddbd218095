"""`TrainConfig`: everything a training run depends on, saved as `train_config.json` in its folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchclip.datasets.bad_samples import MAX_BAD_IN_ROW


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as `train_config.json` beside the checkpoints."""

    data: str
    output_dir: str
    model: str | None = None  # a checkpoint to fine-tune (any that torchclip loads); None: random init
    model_config: dict[str, Any] | None = None  # CLIPConfig dict for random init
    # fine-tune `model` at another input size (pixels a side): its image position embeddings are resized
    # bicubically and its processor resizes to it; None: the checkpoint's own size
    image_size: int | None = None
    steps: int = 1000  # optimiser steps
    batch_size: int = 64  # pairs per micro-batch on each rank
    accum_steps: int = 1
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    precision: str = "fp32"  # or "bf16" (autocast)
    grad_checkpointing: bool = False
    lock_image: bool = False  # LiT: keep the image tower (and its projection) fixed
    lock_text: bool = False
    local_loss: bool = False
    workers: int = 2
    seed: int = 0
    save_every: int = 500
    log_every: int = 10
    save_dtype: str = "float32"  # dtype of the final exported model
    # WiSE-FT (Wortsman et al., 2022): export (1 - a) * starting weights + a * trained weights, which keeps
    # more of what the starting checkpoint knew; needs `model`. None: the trained weights as they are.
    wise_ft: float | None = None
    device: str | None = None  # default: cuda:LOCAL_RANK when available, else cpu; "cuda" means cuda:LOCAL_RANK
    progress: bool = True
    max_bad_in_row: int = MAX_BAD_IN_ROW  # consecutive unusable samples in one data stream before giving up

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lock_image and self.lock_text:
            raise ValueError("lock_image and lock_text together leave nothing to train")
        if self.model is None and self.model_config is None:
            raise ValueError("give a checkpoint to start from (model) or a model_config to initialise randomly")
        if self.wise_ft is not None and (self.model is None or not 0 < self.wise_ft <= 1):
            raise ValueError(f"wise_ft must be in (0, 1] and needs a starting checkpoint (model), got {self.wise_ft}")
        if self.image_size is not None and (self.model is None or self.image_size < 1):
            raise ValueError(f"image_size must be >= 1 and needs a starting checkpoint (model), got {self.image_size}")
        for name in ("steps", "batch_size", "accum_steps", "max_bad_in_row"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    @property
    def streams(self) -> int:
        """Data streams per rank: one per DataLoader worker, or one read in the main process."""
        return max(1, self.workers)
