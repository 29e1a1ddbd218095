"""`load`: any published CLIP checkpoint as a model and its preprocessing, as OpenAI's `clip.load`.

It reads an HF checkpoint folder (config.json + weights, as `save_pretrained` writes it) or a model-hub id,
OpenAI's released files (TorchScript archives) and plain state dicts in their key layout, and OpenCLIP
checkpoints of the CLIP architecture (see the package's docstring and docs/checkpoints.md).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from torchclip.checkpoint import CheckpointError
from torchclip.config import CLIPConfig
from torchclip.convert import openai
from torchclip.convert.files import read_checkpoint
from torchclip.convert.openclip import OPENAI_HUB_IDS, OPENAI_MODELS, resolve_activation
from torchclip.hub import resolve_folder
from torchclip.image_processor import CLIPImageProcessor
from torchclip.io import (
    FAST_TOKENIZER_FILE,
    IMAGE_PROCESSOR_CONFIG_FILE,
    MODEL_CONFIG_FILE,
    PROCESSOR_CONFIG_FILE,
    VOCAB_FILE,
    read_json,
)
from torchclip.modeling.clip import CLIPModel
from torchclip.modeling.fast import cpu_has_bf16_kernels
from torchclip.processor import CLIPPreprocess, CLIPProcessor
from torchclip.tokenizer import CLIPTokenizer

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def load(
    name_or_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    jit: bool = False,
    dtype: torch.dtype | str = torch.float32,
    activation: str | None = None,
    model_name: str | None = None,
    download_root: str | None = None,
) -> tuple[CLIPModel, CLIPPreprocess]:
    """A CLIPModel (eval mode, on `device`, in `dtype`) and its preprocessing, as OpenAI's `clip.load`.

    `name_or_path`: an HF folder, a hub id, a checkpoint file, or one of OpenAI's model names with an HF-hub
    copy (`ViT-B/32`, `ViT-B/16`, `ViT-L/14`, `ViT-L/14@336px`: read from OpenAI's HF repositories).
    `activation` ("quick_gelu" or "gelu") and `model_name` (see `available_models()`) apply to checkpoint
    files in OpenAI's layout; OpenAI's TorchScript archives need neither, OpenCLIP files need one of them.
    `jit`: only False (the eager model, OpenAI's recommended choice); torchclip builds no TorchScript model.
    `download_root` is accepted for OpenAI's signature and unused: torchclip downloads nothing but hub copies.
    The model also has OpenAI's `encode_image`, `encode_text` and `model(image, text)`.
    """
    if jit:
        raise ValueError(
            "jit=True asks for OpenAI's TorchScript model, which torchclip does not build: use jit=False (the "
            "eager model, same results), or torch.compile(model) for speed"
        )
    model, processor = _load(name_or_path, device, dtype, activation, model_name)
    first = next(model.parameters())
    if first.dtype == torch.bfloat16 and first.device.type == "cpu" and not cpu_has_bf16_kernels():
        warnings.warn(
            "bfloat16 on this CPU runs several times slower than float32: it has no bf16 matrix kernels "
            "(oneDNN needs AVX-512 or AMX); float32, or int8 on the CPU, is faster here",
            stacklevel=2,
        )
    return model, CLIPPreprocess(processor.image_processor, processor.tokenizer)


def _load(
    name_or_path: str | os.PathLike,
    device: torch.device | str,
    dtype: torch.dtype | str,
    activation: str | None,
    model_name: str | None,
) -> tuple[CLIPModel, CLIPProcessor]:
    path = Path(name_or_path).expanduser()
    text = str(name_or_path)
    if path.is_file():
        model = model_from_file(path, activation=activation, model_name=model_name, dtype=dtype, device=device)
        return model, default_processor(model.config)
    if not path.exists() and text in OPENAI_MODELS:
        if text not in OPENAI_HUB_IDS:
            raise FileNotFoundError(
                f"OpenAI's {text} has no copy on the model hub and torchclip downloads nothing else: pass the path "
                f"of OpenAI's {text}.pt file"
            )
        name_or_path = OPENAI_HUB_IDS[text]
    elif not path.exists() and path.suffix in CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(f"checkpoint file {text!r} does not exist")
    if activation is not None or model_name is not None:
        raise ValueError(
            "activation= and model_name= apply to OpenAI/OpenCLIP checkpoint files; an HF folder's config.json "
            "already says which activation and architecture it has"
        )
    return load_folder(name_or_path, device=device, dtype=dtype)


def load_folder(
    name_or_path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32
) -> tuple[CLIPModel, CLIPProcessor]:
    """An HF checkpoint folder (or hub id) of a CLIP model, and its processor files.

    A folder without processor files gets the standard CLIP processor, sized for the model's image size.
    """
    folder = resolve_folder(name_or_path, what="CLIP checkpoint")
    config_file = folder / MODEL_CONFIG_FILE
    if config_file.is_file():
        model_type = read_json(config_file).get("model_type", "clip")
        if model_type != CLIPConfig.model_type:
            kind = "a single CLIP tower" if str(model_type).startswith("clip") else "another model family"
            raise CheckpointError(
                f"{config_file}: model_type {model_type!r}, {kind}: torchclip.load reads whole CLIP models "
                "(model_type 'clip')"
            )
    model = CLIPModel.from_pretrained(folder, torch_dtype=dtype, device=device)
    has_image_config = any((folder / name).is_file() for name in (IMAGE_PROCESSOR_CONFIG_FILE, PROCESSOR_CONFIG_FILE))
    has_tokenizer = any((folder / name).is_file() for name in (VOCAB_FILE, FAST_TOKENIZER_FILE))
    if has_image_config and has_tokenizer:
        return model, CLIPProcessor.from_pretrained(folder)
    default = default_processor(model.config)
    image_processor = CLIPImageProcessor.from_pretrained(folder) if has_image_config else default.image_processor
    tokenizer = CLIPTokenizer.from_pretrained(folder) if has_tokenizer else default.tokenizer
    return model, CLIPProcessor(image_processor, tokenizer)


def model_from_file(
    path: str | os.PathLike,
    *,
    activation: str | None = None,
    model_name: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
) -> CLIPModel:
    """A CLIPModel from one checkpoint file in OpenAI's layout (OpenAI's or OpenCLIP's).

    The architecture comes from the tensor shapes (read on the CPU); with `model_name` they must also match
    that architecture. See `openclip.resolve_activation` for how the activation is chosen.
    """
    source = str(path)
    state, scripted = read_checkpoint(path)
    openai.check_layout(state, source)
    act, arch = resolve_activation(
        activation, model_name, openai_original=scripted or openai.has_openai_metadata(state), source=source
    )
    config = openai.infer_config(state, act, source, head_width=arch.head_width if arch else None)
    if arch is not None:
        found, expected = openai.shape_summary(config), arch.shapes()
        differences = [
            f"{key} {found[key]} (expected {expected[key]})" for key in expected if found[key] != expected[key]
        ]
        if differences:
            raise CheckpointError(f"{source}: the weights are not a {model_name}: " + ", ".join(differences))
    hf_state = openai.to_hf(state, config, source)
    del state
    try:
        return CLIPModel.from_state_dict(hf_state, config, torch_dtype=dtype, device=device, source=source)
    except CheckpointError as exc:
        raise CheckpointError(openai.explain_keys(str(exc), config)) from None


def default_processor(config: CLIPConfig) -> CLIPProcessor:
    """The standard CLIP processor (OpenAI's preprocessing and vocabulary), sized for this model."""
    size = config.vision_config.image_size
    tokenizer = CLIPTokenizer(model_max_length=config.text_config.max_position_embeddings)
    if tokenizer.vocab_size != config.text_config.vocab_size:
        warnings.warn(
            f"the model's vocabulary has {config.text_config.vocab_size} tokens, the standard CLIP tokenizer "
            f"{tokenizer.vocab_size}: its token ids do not fit this model",
            stacklevel=3,
        )
    return CLIPProcessor(CLIPImageProcessor(size=size, crop_size=size), tokenizer)
