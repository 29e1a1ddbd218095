"""The model a run trains: built or loaded, made ready for training (locked towers, DDP), and exported.

DDP wraps `TowerFeatures`, not the `CLIPModel`: its forward is what a training step runs (both towers to
normalised features, and the temperature), so the gradients DDP averages are exactly those of the loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchclip.config import CLIPConfig, CLIPVisionConfig
from torchclip.convert import load
from torchclip.distributed import Distributed
from torchclip.image_processor import CLIPImageProcessor
from torchclip.modeling import CLIPModel
from torchclip.modeling.layers import resize_position_embeddings
from torchclip.processor import CLIPProcessor
from torchclip.train.config import TrainConfig

MAX_LOGIT_SCALE = math.log(100)  # the temperature is clamped to at most 100, as in the paper


class TowerFeatures(nn.Module):
    """What DDP wraps: both towers to normalised features, plus the exponentiated temperature."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = self.model.get_image_features(pixel_values).float()
        text = self.model.get_text_features(input_ids, attention_mask).float()
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return image, text, self.model.logit_scale.exp()


def build_model_and_processor(config: TrainConfig) -> tuple[nn.Module, Any]:
    """The checkpoint in `model` (any that torchclip loads, in float32, with its processor), or a fresh
    model from `model_config` with the standard processor sized for it."""
    if config.model is not None:
        model, processor = load(config.model, device="cpu", dtype=torch.float32)
        if config.image_size is not None:
            resize_image_input(model, processor, config.image_size)
        return model, processor
    model = CLIPModel(CLIPConfig.from_dict(config.model_config or {}))
    side = model.config.vision_config.image_size
    return model, CLIPProcessor(CLIPImageProcessor(size=side, crop_size=side))


@torch.no_grad()
def resize_image_input(model: nn.Module, processor: Any, side: int) -> None:
    """Make a ViT `model` and its processor take `side` x `side` pixels, to fine-tune at another resolution:
    the patch grid's position embeddings resized bicubically (`resize_position_embeddings`, as timm and
    OpenCLIP do it), the patch embedding kept, the processor's resize and centre crop set to `side`."""
    vision = model.config.vision_config
    if not isinstance(vision, CLIPVisionConfig):
        raise ValueError(f"image_size resizes a ViT image tower's input, not a {vision.model_type} one")
    if side % vision.patch_size:
        raise ValueError(f"image_size {side} is not a multiple of the model's patch size {vision.patch_size}")
    embeddings = model.vision_model.embeddings
    grid = side // vision.patch_size
    weight = resize_position_embeddings(embeddings.position_embedding.weight, grid, grid)
    embeddings.position_embedding = nn.Embedding.from_pretrained(weight.clone(), freeze=False)
    embeddings.image_size = vision.image_size = side
    processor.image_processor.size = {"shortest_edge": side}
    processor.image_processor.crop_size = {"height": side, "width": side}


def lock_tower(model: nn.Module, tower: str) -> None:
    """Freeze one tower and its projection (LiT), in eval mode so that nothing in it changes."""
    modules = ("vision_model", "visual_projection") if tower == "image" else ("text_model", "text_projection")
    for name in modules:
        module = getattr(model, name)
        module.requires_grad_(False)
        module.eval()


def prepare_model(model: nn.Module, config: TrainConfig, env: Distributed, device: torch.device) -> nn.Module:
    """Move `model` to `device` in training mode with the run's options; returns the `TowerFeatures` a
    step calls, wrapped in DDP when there are several processes."""
    model.to(device).train()
    if config.grad_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lock_image:
        lock_tower(model, "image")
    if config.lock_text:
        lock_tower(model, "text")
    features: nn.Module = TowerFeatures(model)
    if env.enabled:
        ids = [device.index] if device.type == "cuda" else None
        features = nn.parallel.DistributedDataParallel(features, device_ids=ids)
    return features


def gradient_sync(features: nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager:
    """DDP averages gradients in every backward pass; with gradient accumulation only the last micro-batch
    of a step needs it, so the others run under `no_sync()`."""
    if isinstance(features, nn.parallel.DistributedDataParallel) and not last_micro_batch:
        return features.no_sync()
    return contextlib.nullcontext()


def clamp_logit_scale(model: nn.Module) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


@torch.no_grad()
def interpolate_weights(model: nn.Module, start: dict[str, torch.Tensor], alpha: float) -> None:
    """Set `model`'s weights to (1 - alpha) * `start` + alpha * its own (WiSE-FT's weight-space ensemble of a
    starting checkpoint and its fine-tuned version, which share one architecture)."""
    mixed = {
        name: tensor.lerp(start[name].to(tensor.device, tensor.dtype), 1 - alpha)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in model.state_dict().items()
    }
    model.load_state_dict(mixed)


def export(model: nn.Module, processor: Any, folder: Path, dtype: str = "float32") -> Path:
    """The trained model as an HF folder (config, safetensors, tokenizer and preprocessor files)."""
    saved = copy.deepcopy(model).to("cpu", getattr(torch, dtype)).eval()
    saved.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
