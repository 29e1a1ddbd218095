"""Run an exported model (`torchclip export MODEL OUT --format onnx`) in ONNX Runtime.

`load_onnx(OUT)` returns an encoder with the part of CLIPModel's interface that embedding, zero-shot
classification and search use (`get_text_features`, `get_image_features`, `config`, `logit_scale`,
`device`, `dtype`), so the same code runs either backend; tensors in and out are torch tensors on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchclip.config import CLIPConfig
from torchclip.deploy.onnx_export import MANIFEST, session
from torchclip.processor import CLIPProcessor


class ONNXCLIPEncoder:
    """Both towers as ONNX Runtime sessions. `fingerprint` is the exported model's (see
    `torchclip.store.model_fingerprint`), so a store embedded with either backend is searched with either."""

    def __init__(self, folder: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{folder} is not an ONNX export: it has no {MANIFEST} (make one with "
                "`torchclip export MODEL OUT --format onnx`)"
            )
        self.folder = folder
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.config = CLIPConfig.from_pretrained(folder)
        self.text_session = session(folder / self.manifest["text_model"], providers, threads)
        self.vision_session = session(folder / self.manifest["vision_model"], providers, threads)
        self.logit_scale = torch.tensor(float(self.manifest["logit_scale"]))
        self.fingerprint: str = self.manifest["fingerprint"]
        self.device = torch.device("cpu")  # where inputs are expected and outputs returned
        self.dtype = torch.float32  # of pixel_values in and embeddings out (fp16 graphs cast inside)

    def get_text_features(self, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """Projected (not normalised) text embeddings [batch, projection_dim], float32."""
        ids = _as_array(input_ids).astype(np.int64)
        mask = np.ones_like(ids) if attention_mask is None else _as_array(attention_mask).astype(np.int64)
        (embeds,) = self.text_session.run(None, {"input_ids": ids, "attention_mask": mask})
        return torch.from_numpy(embeds)

    def get_image_features(self, pixel_values: Any) -> torch.Tensor:
        """Projected (not normalised) image embeddings [batch, projection_dim], float32."""
        pixels = _as_array(pixel_values).astype(np.float32)
        (embeds,) = self.vision_session.run(None, {"pixel_values": pixels})
        return torch.from_numpy(embeds)

    def eval(self) -> ONNXCLIPEncoder:
        return self  # always inference: for code written for torch modules

    def __repr__(self) -> str:
        return f"ONNXCLIPEncoder({str(self.folder)!r}, dtype={self.manifest['dtype']!r})"


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def load_onnx(
    folder: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None
) -> ONNXCLIPEncoder:
    """The ONNX export in `folder` as an encoder (see `ONNXCLIPEncoder`). `providers`: ONNX Runtime execution
    providers in order of preference (default: CUDA when available, then CPU); `threads`: CPU threads
    (default: ONNX Runtime's choice)."""
    return ONNXCLIPEncoder(folder, providers, threads)


def load_onnx_and_processor(folder: str | os.PathLike | None, device: str = "cpu", dtype: str = "float32") -> tuple:
    """(ONNXCLIPEncoder, CLIPProcessor) for the command line's `--backend onnx --model FOLDER --device D`."""
    if folder is None:
        raise ValueError("--backend onnx needs --model: a folder from `torchclip export MODEL OUT --format onnx`")
    if dtype != "float32":
        raise ValueError(f"--backend onnx runs the export's own dtype; for {dtype}, export with --dtype {dtype}")
    if device == "cpu":
        providers = ["CPUExecutionProvider"]
    elif device.startswith("cuda"):
        import onnxruntime  # noqa: PLC0415 - optional dependency (onnx)

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ValueError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        raise ValueError(f"--backend onnx runs on cpu or cuda, not {device!r}")
    return load_onnx(folder, providers), CLIPProcessor.from_pretrained(folder)
