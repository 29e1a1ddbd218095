"""Export a CLIPModel (or an HF-layout folder) as a state dict in OpenAI's key layout.

The file is what OpenAI's `build_model` and OpenCLIP's `build_model_from_openai_state_dict` read, and what
`torchclip.load` / `torchclip convert` read back. OpenAI's layout records shapes only: the architecture is
re-derived from them on loading (one attention head per 64 channels, pooling at the largest token id) and the
activation is not recorded at all, so loading the file back needs `activation=` (or a model name). Settings
that OpenAI's layout cannot express are refused rather than exported into a file that would load differently.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from torchclip.checkpoint import parse_dtype
from torchclip.config import CLIPConfig, CLIPResNetVisionConfig
from torchclip.convert import openai
from torchclip.convert.openclip import ACTIVATIONS, vision_head_width
from torchclip.io import atomic_path
from torchclip.modeling.clip import CLIPModel


def export_problems(config: CLIPConfig) -> list[str]:
    """What in `config` OpenAI's layout would lose (empty when the export is faithful)."""
    text, vision = config.text_config, config.vision_config
    problems = []
    if text.num_attention_heads * 64 != text.hidden_size:
        problems.append(f"the text tower has {text.num_attention_heads} heads; OpenAI's layout implies width / 64")
    if text.eos_token_id not in (2, text.vocab_size - 1):
        problems.append(
            f"the text tower pools at eos_token_id {text.eos_token_id}; OpenAI's layout implies the largest id "
            f"({text.vocab_size - 1})"
        )
    if text.layer_norm_eps != 1e-5:
        problems.append(f"text layer_norm_eps is {text.layer_norm_eps}; OpenAI's layout implies 1e-5")
    if text.hidden_act not in ACTIVATIONS:
        problems.append(f"text activation {text.hidden_act!r} is neither of {ACTIVATIONS}")
    if isinstance(vision, CLIPResNetVisionConfig):
        if vision.heads * 64 != vision.width * 32:
            problems.append(f"the ResNet attention pool has {vision.heads} heads; OpenAI's layout implies width / 2")
    else:
        head_width = vision_head_width(vision.hidden_size)
        if vision.num_attention_heads * head_width != vision.hidden_size:
            problems.append(
                f"the image tower has {vision.num_attention_heads} heads; its width implies "
                f"{vision.hidden_size // head_width}"
            )
        if vision.hidden_act != text.hidden_act:
            problems.append(f"the towers use different activations ({text.hidden_act!r}, {vision.hidden_act!r})")
        if vision.layer_norm_eps != 1e-5:
            problems.append(f"image layer_norm_eps is {vision.layer_norm_eps}; OpenAI's layout implies 1e-5")
    return problems


def export_openai(
    model: CLIPModel | str | os.PathLike, output: str | os.PathLike, dtype: torch.dtype | str | None = None
) -> Path:
    """Write `model` (a CLIPModel, or an HF folder / hub id) as an OpenAI-layout state dict.

    `.safetensors` output is written with safetensors, anything else with `torch.save` (a plain dict of
    tensors). `dtype`: cast every floating tensor (e.g. float16, as OpenAI's files are); default: keep.
    The file is written under a temporary name and renamed, so it is never seen half-written.
    """
    if not isinstance(model, CLIPModel):
        model = CLIPModel.from_pretrained(model, torch_dtype="auto")
    problems = export_problems(model.config)
    if problems:
        raise ValueError("this model cannot be written in OpenAI's layout faithfully: " + "; ".join(problems))
    target = parse_dtype(dtype)
    if target == "auto":
        target = None
    state = {  # contiguous: the projections are transposed views
        key: (tensor.to(target) if target is not None and tensor.is_floating_point() else tensor).cpu().contiguous()
        for key, tensor in openai.from_hf(model.state_dict(), model.config).items()
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        if output.suffix == ".safetensors":
            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    return output
