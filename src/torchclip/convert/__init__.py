"""Load every published CLIP checkpoint, and convert between OpenAI's layout and the HF folder layout.

`load(name_or_path)` returns `(CLIPModel, preprocess)` as OpenAI's `clip.load` does: `preprocess(image)` is
OpenAI's image transform (a PIL image to a [3, H, W] tensor), and the same object is a full `CLIPProcessor`
(`preprocess(text=..., images=...)`, `.tokenizer`, `.image_processor`). It reads:

- an HF checkpoint folder (config.json + weights, as `save_pretrained` writes it) or a model-hub id;
- OpenAI's released files (`ViT-B-32.pt`, `RN50.pt`, ...: TorchScript archives) and plain state dicts in
  the same key layout (`.pt`, `.bin`, `.safetensors`);
- OpenCLIP checkpoints of the CLIP architecture: plain, `{"state_dict": ...}`, with or without DDP's
  `module.` prefix. Their activation (GELU, or QuickGELU as OpenAI's) must be given, by `activation=` or
  by `model_name=`: the weights do not say, and torchclip does not guess.

`convert_checkpoint` writes any of those as a complete HF folder; `export_openai` writes the OpenAI layout back.
See docs/checkpoints.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from torchclip.checkpoint import CheckpointError
from torchclip.config import CONFIG_NAME, CLIPConfig, default_file_mode
from torchclip.convert import openai
from torchclip.convert.export import export_openai
from torchclip.convert.files import read_checkpoint
from torchclip.convert.openclip import OPENAI_HUB_IDS, OPENAI_MODELS, available_models, resolve_activation
from torchclip.image_processor import CLIPImageProcessor
from torchclip.modeling.clip import CLIPModel
from torchclip.processor import CLIPPreprocess, CLIPProcessor
from torchclip.tokenizer import CLIPTokenizer

__all__ = ["available_models", "convert_checkpoint", "export_openai", "load", "model_from_file", "write_hf_folder"]

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
    from torchclip.hub import resolve_folder

    folder = resolve_folder(name_or_path, what="CLIP checkpoint")
    config_file = folder / CONFIG_NAME
    if config_file.is_file():
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "clip")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{config_file}: not a valid config file ({exc})") from None
        if model_type != CLIPConfig.model_type:
            kind = "a single CLIP tower" if str(model_type).startswith("clip") else "another model family"
            raise CheckpointError(
                f"{config_file}: model_type {model_type!r}, {kind}: torchclip.load reads whole CLIP models "
                "(model_type 'clip')"
            )
    model = CLIPModel.from_pretrained(folder, torch_dtype=dtype, device=device)
    has_image_config = (folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file()
    has_tokenizer = (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()
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


def convert_checkpoint(
    path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    activation: str | None = None,
    model_name: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Convert an OpenAI/OpenCLIP checkpoint file into a complete HF folder at `output` (see `write_hf_folder`)."""
    _check_output(Path(output), overwrite)
    model = model_from_file(path, activation=activation, model_name=model_name, dtype=dtype)
    return write_hf_folder(model, default_processor(model.config), output, overwrite=overwrite)


def write_hf_folder(
    model: CLIPModel, processor: CLIPProcessor, output: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write config.json, model.safetensors, the tokenizer files and preprocessor_config.json.

    Everything is written into a temporary folder next to `output`, which is renamed to `output` at the end:
    a failure leaves no half-written folder. An existing non-empty `output` is replaced only with `overwrite`.
    """
    output = Path(output)
    _check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        staging.chmod(default_file_mode(directory=True))  # mkdtemp makes it private
        if output.exists():
            previous = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old-"))
            os.replace(output, previous)  # an empty folder, or with overwrite=True the old checkpoint
            try:
                os.replace(staging, output)
            except BaseException:
                os.replace(previous, output)
                raise
            shutil.rmtree(previous)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"output {str(output)!r} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {str(output)!r} exists and is not empty (pass overwrite=True / --overwrite)"
        )
