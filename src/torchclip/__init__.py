"""torchclip: CLIP (Contrastive Language-Image Pre-training) in plain PyTorch.

Public names are imported lazily, so `import torchclip` stays fast and a command that only
tokenizes never pays for building the model code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "config": ["CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig", "CLIPResNetVisionConfig"],
    "modeling": [
        "CLIPModel",
        "CLIPTextModel",
        "CLIPVisionModel",
        "CLIPTextModelWithProjection",
        "CLIPVisionModelWithProjection",
        "CLIPForImageClassification",
        "CLIPResNetVisionModel",
        "CLIPOutput",
        "ModelOutput",
    ],
    "tokenizer": ["CLIPTokenizer", "BatchEncoding", "tokenize"],
    "image_processor": ["CLIPImageProcessor", "CLIPFeatureExtractor", "BatchFeature"],
    "processor": ["CLIPProcessor"],
    "convert": ["load", "available_models"],
    "zero_shot": ["ZeroShotClassifier", "pipeline"],
    "store": ["EmbeddingStore"],
    "deploy.onnx_runtime": ["load_onnx"],
    "deploy.quantize": ["quantize"],
}
_NAME_TO_MODULE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_NAME_TO_MODULE)


def __getattr__(name: str) -> Any:
    module = _NAME_TO_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'torchclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"torchclip.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
