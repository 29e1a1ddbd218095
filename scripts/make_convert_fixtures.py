"""Make the golden checkpoint-conversion fixtures with the reference implementation (OpenCLIP's model code).

Run with the reference environment, which has open_clip (the project's own tests never need it):

    /work/refenv/bin/python scripts/make_convert_fixtures.py

OpenCLIP's `CLIP` class reproduces OpenAI's original model code exactly (ViT and modified ResNet towers, the
same state-dict keys). This script builds two tiny CLIP models in OpenAI's layout with random weights (every
parameter and BatchNorm statistic perturbed, so biases and norms are exercised), rounds every weight to a
float16 value, and writes under tests/data/convert/:

- `vit_jit.pt`: the ViT model as a TorchScript archive (`torch.jit.script`), stored as OpenAI's releases are:
  convolution, linear, attention and projection weights in float16, the rest in float32;
- `rn.pt`: the ResNet model as a plain `state_dict` file (`torch.save`), with the same float16 conversion;
- `reference.pt`: a plain dict of tensors: the inputs (`{vit,rn}.pixel_values`, `input_ids`) and the
  reference's outputs computed in float32 from the same (float16-representable) weights:
  `{model}.image_features` (`encode_image`), `{model}.text_features` (`encode_text`), `{model}.logits_per_image`
  (logit scale times normalised image @ text features), for `vit` (QuickGELU, as OpenAI's models), `vit_gelu`
  (the same weights with OpenCLIP's GELU) and `rn` (QuickGELU text tower);
- `architectures.json`: the tiny architectures built here (what shape inference must find);
- `openclip_configs.json`: OpenCLIP's own model configs (`open_clip.get_model_config`) for every model whose
  towers are its built-in ViT / modified ResNet and text transformer (no timm or HF towers), to check
  torchclip's architecture table and activation rule against.

Token ids follow OpenAI's conventions on a tiny vocabulary: start token `vocab - 2`, end token `vocab - 1` (the
largest id, where the text tower pools), zero padding.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_fp16

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "convert"

EMBED_DIM = 64
TEXT = dict(context_length=16, vocab_size=300, width=128, heads=2, layers=2, mlp_ratio=2.0)
VIT = dict(layers=2, width=128, head_width=64, patch_size=8, image_size=32, mlp_ratio=2.0)
# ResNet width 4: stem channels 2/4, stages of 16/32/64/128 channels, an attention pool over the 128 channels
# with 4 * 32 // 64 = 2 heads (OpenAI's rule: width * 32 // 64).
RN = dict(layers=(1, 2, 1, 1), width=4, image_size=64)


def build(vision: dict, quick_gelu: bool, seed: int) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(EMBED_DIM, CLIPVisionCfg(**vision), CLIPTextCfg(**TEXT), quick_gelu=quick_gelu).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "logit_scale":
                param.add_(torch.randn_like(param) * 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn_like(buffer) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
        for tensor in model.state_dict().values():  # weights exactly representable in float16
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def token_ids(count: int) -> torch.Tensor:
    vocab, length = TEXT["vocab_size"], TEXT["context_length"]
    generator = torch.Generator().manual_seed(7)
    ids = torch.zeros(count, length, dtype=torch.long)
    for row in range(count):
        stop = length - 1 - 5 * row  # one row uses the whole context, the others end earlier
        ids[row, 0] = vocab - 2
        ids[row, 1:stop] = torch.randint(1, vocab - 2, (stop - 1,), generator=generator)
        ids[row, stop] = vocab - 1
    return ids


@torch.no_grad()
def outputs(model: CLIP, pixels: torch.Tensor, ids: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    image = model.encode_image(pixels)
    text = model.encode_text(ids)
    image_n, text_n = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    return {
        f"{prefix}.image_features": image,
        f"{prefix}.text_features": text,
        f"{prefix}.logits_per_image": model.logit_scale.exp() * image_n @ text_n.t(),
    }


def openai_storage(model: CLIP) -> CLIP:
    """The dtypes of OpenAI's released files: OpenCLIP's `convert_weights_to_fp16` is OpenAI's `convert_weights`."""
    convert_weights_to_fp16(model)
    return model


def openclip_configs() -> dict[str, dict]:
    configs = {}
    for name in open_clip.list_models():
        config = open_clip.get_model_config(name)
        if config is None or "timm_model_name" in config.get("vision_cfg", {}):
            continue
        if "hf_model_name" in config.get("text_cfg", {}) or config.get("custom_text"):
            continue
        configs[name] = config
    return configs


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(3)
    ids = token_ids(3)
    reference: dict[str, torch.Tensor] = {"input_ids": ids}

    vit = build(VIT, quick_gelu=True, seed=0)
    vit_pixels = torch.randn(2, 3, VIT["image_size"], VIT["image_size"], generator=generator)
    reference["vit.pixel_values"] = vit_pixels
    reference.update(outputs(vit, vit_pixels, ids, "vit"))

    vit_gelu = build(VIT, quick_gelu=False, seed=1)
    vit_gelu.load_state_dict(vit.state_dict())
    reference.update(outputs(vit_gelu, vit_pixels, ids, "vit_gelu"))

    rn = build(RN, quick_gelu=True, seed=2)
    rn_pixels = torch.randn(2, 3, RN["image_size"], RN["image_size"], generator=generator)
    reference["rn.pixel_values"] = rn_pixels
    reference.update(outputs(rn, rn_pixels, ids, "rn"))

    torch.jit.script(openai_storage(vit)).save(str(OUT / "vit_jit.pt"))
    torch.save(openai_storage(rn).state_dict(), OUT / "rn.pt")
    torch.save({key: value.contiguous() for key, value in reference.items()}, OUT / "reference.pt")
    architectures = {
        "embed_dim": EMBED_DIM,
        "text": TEXT,
        "vit": VIT,
        "rn": {**RN, "layers": list(RN["layers"]), "heads": RN["width"] * 32 // 64},
    }
    (OUT / "architectures.json").write_text(json.dumps(architectures, indent=2, sort_keys=True) + "\n")
    (OUT / "openclip_configs.json").write_text(json.dumps(openclip_configs(), indent=2, sort_keys=True) + "\n")
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
