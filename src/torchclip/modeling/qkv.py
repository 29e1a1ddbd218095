"""Query, key and value: one fused `in_proj` in the modules, three keys in transformers' checkpoints.

Attention computes query, key and value in one matrix multiply (as OpenAI's original does), while HF
checkpoints store `q_proj` / `k_proj` / `v_proj` separately. `separate_qkv_in_state_dict` makes a module show
and accept the separate keys; `fuse_qkv_keys` is the conversion that loading (`base.PreTrainedModel`) and
OpenAI's layout (`convert/openai.py`) use directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KINDS = ("weight", "bias")


def fuse_qkv_keys(state_dict: dict[str, Any], prefix: str) -> None:
    """Replace `{prefix}q_proj/k_proj/v_proj.*` by the fused `{prefix}in_proj.*`, in place."""
    for kind in KINDS:
        names = [f"{prefix}{name}_proj.{kind}" for name in ("q", "k", "v")]
        if all(name in state_dict for name in names):
            state_dict[f"{prefix}in_proj.{kind}"] = torch.cat([state_dict.pop(name) for name in names])


def split_qkv_keys(state_dict: dict[str, Any], prefix: str) -> None:
    """Replace the fused `{prefix}in_proj.*` by `{prefix}q_proj/k_proj/v_proj.*` (views of it), in place."""
    for kind in KINDS:
        if f"{prefix}in_proj.{kind}" not in state_dict:
            continue
        fused = state_dict.pop(f"{prefix}in_proj.{kind}")
        for name, part in zip(("q", "k", "v"), fused.chunk(3)):
            state_dict[f"{prefix}{name}_proj.{kind}"] = part


def separate_qkv_in_state_dict(module: nn.Module) -> None:
    """Make `module.state_dict()` show its `in_proj` as q/k/v, and `load_state_dict` accept them."""
    module.register_state_dict_post_hook(_split_hook)
    module.register_load_state_dict_pre_hook(_fuse_hook)


def _split_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    split_qkv_keys(state_dict, prefix)


def _fuse_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    fuse_qkv_keys(state_dict, prefix)
