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
See docs/checkpoints.md. The modules: `loading` (`load`), `hf_folder` (`convert_checkpoint`), `export`
(`export_openai`), `files` (reading one checkpoint file), `openai` (OpenAI's key layout and the architecture
its shapes imply), `openclip` (OpenCLIP's model names and activations).
"""

from __future__ import annotations

from torchclip.convert.export import export_openai
from torchclip.convert.hf_folder import convert_checkpoint, write_hf_folder
from torchclip.convert.loading import load, model_from_file
from torchclip.convert.openclip import available_models

__all__ = ["available_models", "convert_checkpoint", "export_openai", "load", "model_from_file", "write_hf_folder"]
