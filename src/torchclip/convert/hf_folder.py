"""`convert_checkpoint`: an OpenAI or OpenCLIP checkpoint file as a complete HF checkpoint folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from torchclip.convert.loading import default_processor, model_from_file
from torchclip.io import atomic_folder
from torchclip.modeling.clip import CLIPModel
from torchclip.processor import CLIPProcessor


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
    _check_output(output, overwrite)  # an existing output is an empty folder, or replaced with overwrite=True
    with atomic_folder(output) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    return output


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"output {str(output)!r} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {str(output)!r} exists and is not empty (pass overwrite=True / --overwrite)"
        )
