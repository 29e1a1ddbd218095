"""OpenCLIP checkpoints: the published architectures, the activation rule, and the file wrappers.

OpenCLIP's `CLIP` class stores its weights in OpenAI's key layout, so the mapping in `openai.py` serves both.
What differs is what the keys do not say:

- the activation: OpenAI trained with QuickGELU, OpenCLIP's configs default to exact GELU, and the weights
  look the same either way. OpenCLIP names its QuickGELU configs with a `-quickgelu` suffix;
- the number of attention heads in the image tower, which OpenAI derives from the width (one head per
  64 channels) and OpenCLIP sets per config (`head_width` 80 for ViT-H, 88 for ViT-g, 104 for ViT-bigG).

Training checkpoints wrap the weights as `{"state_dict": ..., "epoch": ..., "optimizer": ...}`, with
DistributedDataParallel's `module.` in front of every key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchclip.checkpoint import CheckpointError

ACTIVATIONS = ("quick_gelu", "gelu")


@dataclass(frozen=True)
class Architecture:
    """One published CLIP architecture (OpenCLIP's model config), as tensor shapes and head widths."""

    embed_dim: int
    image_size: int
    vision_layers: int | tuple[int, int, int, int]  # a tuple of 4 stage depths: a ResNet
    vision_width: int
    patch_size: int | None  # None: a ResNet
    text_width: int
    text_layers: int
    head_width: int = 64  # channels per attention head in the image tower
    context_length: int = 77
    vocab_size: int = 49408

    def shapes(self) -> dict[str, object]:
        """What the weights fix, to compare with what a file's shapes say."""
        return {
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "vision_layers": self.vision_layers,
            "vision_width": self.vision_width,
            "patch_size": self.patch_size,
            "text_width": self.text_width,
            "text_layers": self.text_layers,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
        }


def _vit(embed: int, image: int, layers: int, width: int, patch: int, text: int, text_layers: int = 12, head: int = 64):
    return Architecture(embed, image, layers, width, patch, text, text_layers, head)


def _rn(embed: int, image: int, layers: tuple[int, int, int, int], width: int, text: int) -> Architecture:
    return Architecture(embed, image, layers, width, None, text, 12)


# OpenCLIP's model configs (open_clip/model_configs/*.json) of the CLIP architecture: OpenAI's ViT or modified
# ResNet image tower and text transformer, nothing else (no timm or HF towers, layer scale, CLIPA changes).
ARCHITECTURES: dict[str, Architecture] = {
    "RN50": _rn(1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _rn(512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _rn(640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _rn(768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _rn(1024, 448, (3, 15, 36, 10), 128, 1024),
    "ViT-S-32-alt": _vit(256, 224, 12, 384, 32, 256, text_layers=10),
    "ViT-S-32": _vit(384, 224, 12, 384, 32, 384),
    "ViT-S-16-alt": _vit(256, 224, 12, 384, 16, 256, text_layers=10),
    "ViT-S-16": _vit(384, 224, 12, 384, 16, 384),
    "ViT-M-32-alt": _vit(384, 224, 12, 512, 32, 384),
    "ViT-M-32": _vit(512, 224, 12, 512, 32, 512),
    "ViT-M-16": _vit(512, 224, 12, 512, 16, 512),
    "ViT-B-32": _vit(512, 224, 12, 768, 32, 512),
    "ViT-B-32-256": _vit(512, 256, 12, 768, 32, 512),
    "ViT-B-32-plus-256": _vit(640, 256, 12, 896, 32, 640),
    "ViT-B-16": _vit(512, 224, 12, 768, 16, 512),
    "ViT-B-16-plus": _vit(640, 224, 12, 896, 16, 640),
    "ViT-B-16-plus-240": _vit(640, 240, 12, 896, 16, 640),
    "ViT-L-14": _vit(768, 224, 24, 1024, 14, 768),
    "ViT-L-14-280": _vit(768, 280, 24, 1024, 14, 768),
    "ViT-L-14-336": _vit(768, 336, 24, 1024, 14, 768),
    "ViT-L-16": _vit(768, 224, 24, 1024, 16, 768),
    "ViT-L-16-320": _vit(768, 320, 24, 1024, 16, 768),
    "ViT-H-14": _vit(1024, 224, 32, 1280, 14, 1024, text_layers=24, head=80),
    "ViT-H-14-378": _vit(1024, 378, 32, 1280, 14, 1024, text_layers=24, head=80),
    "ViT-H-16": _vit(1024, 224, 32, 1280, 16, 1024, text_layers=24, head=80),
    "ViT-g-14": _vit(1024, 224, 40, 1408, 14, 1024, text_layers=24, head=88),
    "ViT-bigG-14": _vit(1280, 224, 48, 1664, 14, 1280, text_layers=32, head=104),
    "ViT-e-14": _vit(1280, 224, 56, 1792, 14, 1280, text_layers=36, head=112),
}

# OpenAI's release names (`clip.available_models()`), their architectures, and the HF hub copies OpenAI published.
OPENAI_MODELS: dict[str, str] = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}
OPENAI_HUB_IDS: dict[str, str] = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
    "ViT-L/14@336px": "openai/clip-vit-large-patch14-336",
}

QUICKGELU_SUFFIX = "-quickgelu"


def available_models() -> list[str]:
    """OpenAI's model names, then OpenCLIP's architecture names (GELU) and their `-quickgelu` variants,
    each once (OpenAI's ResNet names are also OpenCLIP's)."""
    names = [*OPENAI_MODELS, *ARCHITECTURES, *(name + QUICKGELU_SUFFIX for name in ARCHITECTURES)]
    return list(dict.fromkeys(names))


def is_ambiguous(model_name: str) -> bool:
    """Whether a name means QuickGELU to OpenAI and GELU to OpenCLIP (`RN50`, `RN101`, `RN50x4`, ...)."""
    return model_name in OPENAI_MODELS and model_name in ARCHITECTURES


def architecture(model_name: str) -> tuple[Architecture, str]:
    """The architecture a model name denotes, and the activation that name implies.

    OpenAI's names (`ViT-B/32`, `ViT-L/14@336px`, `RN50`, ...) and names ending in `-quickgelu` mean QuickGELU;
    OpenCLIP's other names (`ViT-B-32`, `ViT-H-14`, ...) mean GELU, as OpenCLIP's configs say.
    """
    if model_name in OPENAI_MODELS:
        return ARCHITECTURES[OPENAI_MODELS[model_name]], "quick_gelu"
    base = model_name.removesuffix(QUICKGELU_SUFFIX)
    if base not in ARCHITECTURES:
        raise ValueError(
            f"unknown model name {model_name!r}; known: {', '.join(OPENAI_MODELS)}, and OpenCLIP's "
            f"{', '.join(ARCHITECTURES)} (each also with '{QUICKGELU_SUFFIX}')"
        )
    return ARCHITECTURES[base], "quick_gelu" if base != model_name else "gelu"


def vision_head_width(vision_width: int) -> int:
    """Channels per image-tower head for a width: OpenCLIP's per-config value, else OpenAI's 64."""
    widths = {arch.vision_width: arch.head_width for arch in ARCHITECTURES.values() if arch.patch_size}
    return widths.get(vision_width, 64)


def resolve_activation(
    activation: str | None, model_name: str | None, *, openai_original: bool, source: str
) -> tuple[str, Architecture | None]:
    """The activation to build with, and the named architecture (if a name was given), never a silent guess.

    Order: an explicit `activation`; else the one `model_name` implies; else QuickGELU for OpenAI's own files
    (`openai_original`: a TorchScript archive or a file carrying OpenAI's metadata keys); else an error.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    arch, implied = architecture(model_name) if model_name is not None else (None, None)
    if model_name is not None and is_ambiguous(model_name) and activation is None and not openai_original:
        raise ValueError(
            f"{source}: model name {model_name!r} is ambiguous for a file that is not OpenAI's own: OpenAI's "
            f"{model_name} uses QuickGELU, OpenCLIP's {model_name!r} config builds GELU. Pass "
            f"model_name='{model_name}{QUICKGELU_SUFFIX}' (OpenAI's weights, as OpenCLIP names them) or "
            f"activation='gelu' / 'quick_gelu' with it"
        )
    if model_name is not None and is_ambiguous(model_name) and activation is not None:
        implied = activation  # the name fixed the architecture, the caller the activation
    if activation is not None and implied is not None and activation != implied:
        raise ValueError(
            f"activation={activation!r} contradicts model name {model_name!r}, which means {implied!r}; "
            f"give one of them (OpenCLIP's QuickGELU configs end in '{QUICKGELU_SUFFIX}')"
        )
    chosen = activation or implied or ("quick_gelu" if openai_original else None)
    if chosen is None:
        raise ValueError(
            f"{source}: a CLIP state dict in OpenAI's key layout, which does not say which activation the model "
            "was trained with: OpenAI's models use QuickGELU, OpenCLIP's GELU unless the model name ends in "
            f"'{QUICKGELU_SUFFIX}'. Pass activation='quick_gelu' or 'gelu' (CLI: --activation), or the model name "
            "(model_name=, CLI: --model-name), e.g. 'ViT-B-32' (OpenCLIP, GELU), 'ViT-B-32-quickgelu' or 'ViT-B/32' "
            "(OpenAI)"
        )
    return chosen, arch


def unwrap_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint: plain, `{"state_dict": ...}`, with or without DDP's `module.` prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: expected a dict of weights (or {{'state_dict': ...}}), got {_describe(obj)}")
    not_tensors = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{source}: expected a dict of tensor names to tensors (or {{'state_dict': ...}}); entries that are "
            f"not tensors: {', '.join(map(str, not_tensors[:8]))}"
        )
    if all(key.startswith("module.") for key in obj):
        obj = {key.removeprefix("module."): value for key, value in obj.items()}
    return obj


def _describe(obj: object) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {', '.join(map(str, list(obj)[:8])) or '(none)'}"
    return f"a {type(obj).__name__}"
