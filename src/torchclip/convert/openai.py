"""OpenAI's key layout <-> the HF layout, and the architecture read from tensor shapes.

OpenAI's layout (also OpenCLIP's): `visual.*` for the image tower, `transformer.resblocks.N.*`,
`token_embedding`, `positional_embedding`, `ln_final` for the text tower, `text_projection`, `logit_scale`.
Attention keeps query, key and value in one `in_proj_weight` (the HF layout splits it into `q_proj` /
`k_proj` / `v_proj`), and the two projections are stored as matrices applied on the right (`x @ proj`),
where the HF layout stores `nn.Linear` weights (their transposes).

The architecture comes from shapes, as OpenAI's `build_model` reads it: widths, depths (counted blocks), patch
size, image size (patch size times the position grid), context length, vocabulary. What shapes do not say:
attention heads (OpenAI: one per 64 channels; the ResNet pool `width * 32 // 64`; OpenCLIP's wide image towers
use other head widths, see `openclip.vision_head_width`) and the activation (the caller decides).
"""

from __future__ import annotations

import math
import re

import torch

from torchclip.checkpoint import CheckpointError
from torchclip.config import CLIPConfig, CLIPResNetVisionConfig, CLIPTextConfig, CLIPVisionConfig
from torchclip.convert.openclip import vision_head_width
from torchclip.modeling.clip import CLIPModel
from torchclip.modeling.qkv import fuse_qkv_keys, split_qkv_keys

# Keys OpenAI's TorchScript archives and older OpenCLIP files carry that are not weights: the model's size
# settings (OpenAI's archives only) and the text tower's causal mask buffer.
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")
IGNORED = (*OPENAI_METADATA, "attn_mask")

# (OpenAI, HF) renames. "prefix": the key starts with it; "exact": the whole key; "infix": inside a block.
# The first prefix/exact rule that matches applies, then every infix rule.
_TEXT = [
    ("token_embedding.", "text_model.embeddings.token_embedding.", "prefix"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight", "exact"),
    ("transformer.resblocks.", "text_model.encoder.layers.", "prefix"),
    ("ln_final.", "text_model.final_layer_norm.", "prefix"),
    ("text_projection", "text_projection.weight", "exact"),
    ("logit_scale", "logit_scale", "exact"),
]
_VIT = [
    ("visual.class_embedding", "vision_model.embeddings.class_embedding", "exact"),
    ("visual.conv1.", "vision_model.embeddings.patch_embedding.", "prefix"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", "exact"),
    ("visual.ln_pre.", "vision_model.pre_layrnorm.", "prefix"),
    ("visual.transformer.resblocks.", "vision_model.encoder.layers.", "prefix"),
    ("visual.ln_post.", "vision_model.post_layernorm.", "prefix"),
    ("visual.proj", "visual_projection.weight", "exact"),
]
_RESNET = [
    ("visual.conv", "vision_model.stem.conv", "prefix"),
    ("visual.bn", "vision_model.stem.bn", "prefix"),
    *((f"visual.layer{stage + 1}.", f"vision_model.stages.{stage}.", "prefix") for stage in range(4)),
    ("visual.attnpool.positional_embedding", "vision_model.attention_pool.position_embedding.weight", "exact"),
    ("visual.attnpool.c_proj.", "vision_model.attention_pool.out_proj.", "prefix"),
    ("visual.attnpool.", "vision_model.attention_pool.", "prefix"),
    (".downsample.0.", ".downsample.conv.", "infix"),
    (".downsample.1.", ".downsample.bn.", "infix"),
]
_BLOCK = [
    (".ln_1.", ".layer_norm1.", "infix"),
    (".ln_2.", ".layer_norm2.", "infix"),
    (".attn.in_proj_weight", ".self_attn.in_proj.weight", "infix"),
    (".attn.in_proj_bias", ".self_attn.in_proj.bias", "infix"),
    (".attn.out_proj.", ".self_attn.out_proj.", "infix"),
    (".mlp.c_fc.", ".mlp.fc1.", "infix"),
    (".mlp.c_proj.", ".mlp.fc2.", "infix"),
]
TRANSPOSED = ("text_projection.weight", "visual_projection.weight")  # HF names of OpenAI's right-hand matrices

# Keys that identify checkpoints of other model families, for the error message.
_OTHER_FAMILIES = [
    ("visual.trunk.", "an OpenCLIP model with a timm image tower (visual.trunk.*)"),
    ("text.transformer.", "an OpenCLIP model with a separate text tower module (text.*, CustomTextCLIP)"),
    ("text.token_embedding.", "an OpenCLIP model with a separate text tower module (text.*, CustomTextCLIP)"),
    ("text_decoder.", "an OpenCLIP CoCa model (text_decoder.*)"),
    ("logit_bias", "a SigLIP-style model (logit_bias)"),
    ("model.diffusion_model.", "a Stable Diffusion checkpoint"),
    ("cond_stage_model.", "a Stable Diffusion checkpoint"),
    ("bert.", "a BERT-style text model"),
    ("encoder.layer.", "a BERT-style text model"),
    ("blocks.", "a timm vision transformer (blocks.*)"),
    ("text_model.", "a checkpoint in the HF layout: pass its folder (with config.json) instead"),
    ("vision_model.", "a checkpoint in the HF layout: pass its folder (with config.json) instead"),
]


def check_layout(state: dict[str, torch.Tensor], source: str) -> str:
    """'vit' or 'resnet' for a CLIP state dict in OpenAI's layout; a clear error for anything else."""
    keys = set(state)
    if {"token_embedding.weight", "ln_final.weight", "text_projection"} <= keys:
        if "visual.proj" in keys and "visual.conv1.weight" in keys:
            return "vit"
        if "visual.attnpool.positional_embedding" in keys:
            return "resnet"
    families = dict.fromkeys(name for prefix, name in _OTHER_FAMILIES if any(key.startswith(prefix) for key in keys))
    found = "; ".join(families) if families else "an unknown layout"
    sample = ", ".join(sorted(keys)[:6]) + (f" ... ({len(keys)} keys)" if len(keys) > 6 else "")
    raise CheckpointError(
        f"{source}: not a CLIP checkpoint in OpenAI's layout (expected token_embedding.weight, ln_final.weight, "
        f"text_projection and visual.proj or visual.attnpool.*); found {found}: {sample}"
    )


def has_openai_metadata(state: dict[str, torch.Tensor]) -> bool:
    """Whether the weights carry the size settings only OpenAI's own archives hold."""
    return all(key in state for key in OPENAI_METADATA)


# ----------------------------------------------------------------------------------------------------
# Architecture from shapes


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of numbered blocks under `prefix` (e.g. 'transformer.resblocks.')."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({match.group(1) for key in state if (match := pattern.match(key))})


def _shape(state: dict[str, torch.Tensor], key: str, source: str, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: {key!r} is missing: an incomplete CLIP checkpoint in OpenAI's layout")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{source}: {key!r} has shape {list(shape)}; a CLIP model's has {ndim} dimensions")
    return shape


def _grid(num_positions: int, what: str, source: str) -> int:
    side = math.isqrt(max(num_positions - 1, 0))
    if side * side + 1 != num_positions:
        raise CheckpointError(
            f"{source}: {what} has {num_positions} positions, not a square grid plus one: "
            "the shapes fit no CLIP architecture"
        )
    return side


def _heads(width: int, head_width: int, what: str, source: str) -> int:
    if width % head_width:
        raise CheckpointError(
            f"{source}: the {what} is {width} wide, not a multiple of the {head_width}-channel attention heads "
            "OpenAI's architecture implies: the shapes fit no known CLIP architecture"
        )
    return width // head_width


def infer_config(
    state: dict[str, torch.Tensor], activation: str, source: str, head_width: int | None = None
) -> CLIPConfig:
    """The CLIPConfig whose model has exactly these weights (OpenAI's `build_model` rules).

    `head_width`: channels per image-tower attention head, when a model name fixed it; else it follows the
    width (`openclip.vision_head_width`).
    """
    tower = check_layout(state, source)
    vocab_size, text_width = _shape(state, "token_embedding.weight", source, 2)
    text_layers = _count(state, "transformer.resblocks.")
    if text_layers == 0:
        raise CheckpointError(f"{source}: no text transformer blocks (transformer.resblocks.N.*)")
    embed_dim = _shape(state, "text_projection", source, 2)[1]
    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=text_width,
        intermediate_size=_shape(state, "transformer.resblocks.0.mlp.c_fc.weight", source, 2)[0],
        projection_dim=embed_dim,
        num_hidden_layers=text_layers,
        num_attention_heads=_heads(text_width, 64, "text transformer", source),
        max_position_embeddings=_shape(state, "positional_embedding", source, 2)[0],
        hidden_act=activation,
        bos_token_id=vocab_size - 2,  # OpenAI's vocabulary ends with <|startoftext|>, <|endoftext|>
        eos_token_id=vocab_size - 1,
    )
    vision: CLIPVisionConfig | CLIPResNetVisionConfig
    if tower == "vit":
        width, channels, patch, _ = _shape(state, "visual.conv1.weight", source, 4)
        positions = _shape(state, "visual.positional_embedding", source, 2)[0]
        grid = _grid(positions, "visual.positional_embedding", source)
        vision = CLIPVisionConfig(
            hidden_size=width,
            intermediate_size=_shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", source, 2)[0],
            projection_dim=embed_dim,
            num_hidden_layers=_count(state, "visual.transformer.resblocks."),
            num_attention_heads=_heads(width, head_width or vision_head_width(width), "image transformer", source),
            num_channels=channels,
            image_size=patch * grid,
            patch_size=patch,
            hidden_act=activation,
        )
    else:
        width = _shape(state, "visual.layer1.0.conv1.weight", source, 4)[0]
        positions = _shape(state, "visual.attnpool.positional_embedding", source, 2)[0]
        grid = _grid(positions, "visual.attnpool.positional_embedding", source)
        layers = tuple(_count(state, f"visual.layer{stage}.") for stage in (1, 2, 3, 4))
        if 0 in layers:
            raise CheckpointError(f"{source}: ResNet stages visual.layer1..4 have {layers} blocks; each needs one")
        vision = CLIPResNetVisionConfig(
            layers=layers,  # type: ignore[arg-type]
            width=width,
            heads=_heads(width * 32, 64, "ResNet attention pool", source),
            output_dim=_shape(state, "visual.attnpool.c_proj.weight", source, 2)[0],
            image_size=grid * 32,
            num_channels=_shape(state, "visual.conv1.weight", source, 4)[1],
        )
        if vision.output_dim != embed_dim:
            raise CheckpointError(
                f"{source}: the ResNet attention pool outputs {vision.output_dim} features but text_projection "
                f"has {embed_dim}: the shapes fit no CLIP architecture"
            )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim)


def shape_summary(config: CLIPConfig) -> dict[str, object]:
    """The shape-defined settings of a config, in `openclip.Architecture.shapes()` terms."""
    vision = config.vision_config
    resnet = isinstance(vision, CLIPResNetVisionConfig)
    return {
        "embed_dim": config.projection_dim,
        "image_size": vision.image_size,
        "vision_layers": tuple(vision.layers) if resnet else vision.num_hidden_layers,
        "vision_width": vision.width if resnet else vision.hidden_size,
        "patch_size": None if resnet else vision.patch_size,
        "text_width": config.text_config.hidden_size,
        "text_layers": config.text_config.num_hidden_layers,
        "context_length": config.text_config.max_position_embeddings,
        "vocab_size": config.text_config.vocab_size,
    }


# ----------------------------------------------------------------------------------------------------
# Key mapping


def _rules(config: CLIPConfig) -> list[tuple[str, str, str]]:
    tower = _RESNET if isinstance(config.vision_config, CLIPResNetVisionConfig) else _VIT
    return [*_TEXT, *tower, *_BLOCK]


def _rename(key: str, rules: list[tuple[str, str, str]], reverse: bool) -> str | None:
    """Apply the first matching prefix/exact rule, then all infix rules; None when no rule claims the key."""
    renamed = None
    for openai, hf, kind in rules:
        old, new = (hf, openai) if reverse else (openai, hf)
        if kind == "exact" and key == old or kind == "prefix" and key.startswith(old):
            renamed = new + key[len(old) :]
            break
    if renamed is None:
        return None
    for openai, hf, kind in rules:
        old, new = (hf, openai) if reverse else (openai, hf)
        if kind == "infix":
            renamed = renamed.replace(old, new)
    return renamed


def to_hf(state: dict[str, torch.Tensor], config: CLIPConfig, source: str) -> dict[str, torch.Tensor]:
    """OpenAI-layout weights -> HF-layout weights (q/k/v split, projections transposed).

    The q/k/v parts are views of OpenAI's fused tensor, and `from_state_dict` fuses them again as it does for
    any HF checkpoint: names and shapes are checked, and reported in errors, in the one layout transformers
    uses, and the round trip costs one concatenation per layer, as loading an HF checkpoint does.

    Every key must be accounted for: keys of features this architecture does not have (layer scale, extra
    norms, attention pooling heads of other models) are an error, never silently dropped.
    """
    with torch.device("meta"):
        expected = set(CLIPModel(config).state_dict())
    rules = _rules(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if key in IGNORED:
            continue
        name = _rename(key, rules, reverse=False)
        if name is not None and name.endswith(("self_attn.in_proj.weight", "self_attn.in_proj.bias")):
            parts = {name: tensor}
            split_qkv_keys(parts, name.rsplit("in_proj.", 1)[0])
        elif name is not None:
            parts = {name: tensor.t() if name in TRANSPOSED else tensor}
        if name is None or not expected.issuperset(parts):
            unknown.append(key)
        else:
            out.update(parts)
    if unknown:
        raise CheckpointError(
            f"{source}: keys that the CLIP architecture does not have (a variant torchclip does not implement, "
            f"e.g. layer scale or extra norms): {', '.join(unknown[:8])}" + (" ..." if len(unknown) > 8 else "")
        )
    if isinstance(config.vision_config, CLIPResNetVisionConfig):
        _add_missing_batch_counts(out)
    return out


def explain_keys(message: str, config: CLIPConfig) -> str:
    """Follow each HF-layout key named in an error message with its OpenAI-layout name, for the user's file."""
    rules = _rules(config)

    def annotate(match: re.Match) -> str:
        key = match.group(0)
        fused = re.sub(r"\.[qkv]_proj\.(weight|bias)$", r".in_proj.\1", key)
        name = _rename(fused, rules, reverse=True)
        return f"{key} ({name} in OpenAI's layout)" if name and name != key else key

    return re.sub(r"\b(?:text_model|vision_model|text_projection|visual_projection)[\w.]*\w", annotate, message)


def _add_missing_batch_counts(state: dict[str, torch.Tensor]) -> None:
    """BatchNorm's `num_batches_tracked` (unused at inference) is absent from some saved ResNets."""
    for key in [key for key in state if key.endswith(".running_mean")]:
        state.setdefault(key.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0))


def from_hf(state: dict[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    """HF-layout weights of a whole CLIPModel -> OpenAI-layout weights (what `build_model` reads)."""
    state = dict(state)
    for key in [key for key in state if key.endswith("self_attn.q_proj.weight")]:
        fuse_qkv_keys(state, key.removesuffix("q_proj.weight"))
    rules = _rules(config)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = _rename(key, rules, reverse=True)
        if name is None:
            raise CheckpointError(f"no OpenAI-layout name for {key!r}: not a CLIPModel weight")
        out[name] = tensor.t() if key in TRANSPOSED else tensor
    return out
