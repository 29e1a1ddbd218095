"""The transformer both towers share: pre-LayerNorm residual blocks of attention and an MLP.

Attention keeps one fused `in_proj` (query, key and value in one matrix multiply, as OpenAI's original
does) while the state dict shows transformers' separate `q_proj` / `k_proj` / `v_proj` keys (`qkv.py`), so
HF checkpoints load and save unchanged. The projections are `fast.Linear` and attention asks
`fast.use_sdpa` which kernel to take: the CPU speed switches live in `fast.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from torchclip.modeling.fast import Linear, use_sdpa
from torchclip.modeling.qkv import separate_qkv_in_state_dict


def quick_gelu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """OpenAI's sigmoid approximation of GELU, which their CLIP checkpoints were trained with."""
    if inplace:
        return x.mul_(torch.sigmoid_(x * 1.702))
    return x * torch.sigmoid(1.702 * x)


def gelu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return torch.ops.aten.gelu_(x) if inplace else F.gelu(x)


def gelu_tanh(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return torch.ops.aten.gelu_(x, approximate="tanh") if inplace else F.gelu(x, approximate="tanh")


# each takes (x, inplace=False): see MLP.forward for why inference overwrites its input
ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "quick_gelu": quick_gelu,
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def get_activation(name: str) -> Callable[..., torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown hidden_act {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `allowed`, the dtype's most negative number elsewhere: the form attention adds to its scores.

    Masks are passed to the layers in this form because `scaled_dot_product_attention` converts a
    boolean mask to it on every call, i.e. in every layer (in bf16 a sizeable part of the attention's time
    for packed text: docs/performance.md, "Attention"). transformers' finite minimum rather than -inf: a query that
    may see nothing (a left-padded position) then gets uniform weights instead of NaN, which would
    spread to every token through the next layer's values.
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def causal_padding_mask(attention_mask: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive [batch, 1, length, length] mask: a query sees earlier positions that are not padding."""
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    return additive_mask(causal & attention_mask.bool()[:, None, None, :], dtype)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention over [batch, heads, length, head_dim]: (output, weights if asked).

    The fast path is PyTorch's `scaled_dot_product_attention`. The plain path below it computes the same with
    two batched matrix multiplies and an fp32 softmax: taken when the attention weights themselves are asked
    for, and where `fast.use_sdpa` says it is the faster (short bf16 sequences on the CPU).
    """
    if not need_weights and use_sdpa(k):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal)
        return out, None
    scores = (q @ k.transpose(-1, -2)).float().mul_(q.shape[-1] ** -0.5)
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        attn_mask = additive_mask(causal, q.dtype)
    if attn_mask is not None:
        scores = scores.add_(attn_mask)
    probabilities = scores.softmax(dim=-1).to(q.dtype)
    out = (F.dropout(probabilities, dropout) if dropout else probabilities) @ v
    return out, probabilities if need_weights else None


class Attention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection (see `attend`)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.in_proj = Linear(hidden_size, 3 * hidden_size)
        self.out_proj = Linear(hidden_size, hidden_size)
        separate_qkv_in_state_dict(self)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, head_dim]
        dropout = self.dropout if self.training else 0.0
        out, weights = attend(q, k, v, attn_mask, is_causal, dropout, need_weights)
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out), weights


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.activation_fn = get_activation(hidden_act)
        self.fc1 = Linear(hidden_size, intermediate_size)
        self.fc2 = Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd the activation overwrites fc1's output instead of allocating two more buffers
        # of [tokens, intermediate_size]: every fresh large buffer is page-faulted in anew (docs/performance.md,
        # "Fresh buffers are expensive"; `torchclip bench` measures it).
        h = self.fc1(x)
        return self.fc2(self.activation_fn(h, inplace=not h.requires_grad))


class EncoderLayer(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.self_attn = Attention(config.hidden_size, config.num_attention_heads, config.attention_dropout)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(self.layer_norm1(x), attn_mask, is_causal, need_weights)
        # residuals are added into the branch's fresh output (one buffer fewer each; autograd-safe, as a
        # linear layer's backward does not need its output); x itself is never overwritten
        x = attended.add_(x)
        x = self.mlp(self.layer_norm2(x)).add_(x)
        return x, weights


class Encoder(nn.Module):
    """A stack of layers. Collects per-layer hidden states and attention weights only when asked."""

    def __init__(self, config: Any):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        num_layers: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Run the first `num_layers` layers (default: all)."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers[:num_layers]:
            if self.gradient_checkpointing and self.training:
                x, weights = checkpoint(layer, x, attn_mask, is_causal, output_attentions, use_reentrant=False)
            else:
                x, weights = layer(x, attn_mask, is_causal, output_attentions)
            if hidden_states is not None:
                hidden_states.append(x)
            if attentions is not None:
                attentions.append(weights)
        return (
            x,
            tuple(hidden_states) if hidden_states is not None else None,
            tuple(attentions) if attentions is not None else None,
        )


def init_encoder(encoder: Encoder, hidden_size: int, factor: float = 1.0) -> None:
    """OpenAI's initialisation of the residual blocks (also transformers')."""
    layers = len(encoder.layers)
    proj_std = hidden_size**-0.5 * (2 * layers) ** -0.5 * factor
    for layer in encoder.layers:
        nn.init.normal_(layer.self_attn.in_proj.weight, std=proj_std)
        nn.init.normal_(layer.self_attn.out_proj.weight, std=hidden_size**-0.5 * factor)
        nn.init.normal_(layer.mlp.fc1.weight, std=(2 * hidden_size) ** -0.5 * factor)
        nn.init.normal_(layer.mlp.fc2.weight, std=proj_std)
        for linear in (layer.self_attn.in_proj, layer.self_attn.out_proj, layer.mlp.fc1, layer.mlp.fc2):
            nn.init.zeros_(linear.bias)
        for norm in (layer.layer_norm1, layer.layer_norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)


def init_layer_norm(norm: nn.LayerNorm) -> None:
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)


def resize_position_embeddings(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Position embeddings [1 + grid * grid, width] for a `height` x `width` grid instead: the first row (the
    class token's, or the ResNet pool's mean token's) kept, the square grid resized bicubically, as
    transformers (ViT) and OpenAI (ResNet) do it. The weight itself when the grid already fits."""
    grid = math.isqrt(weight.shape[0] - 1)
    if height == grid and width == grid:
        return weight
    patches = weight[1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(height, width), mode="bicubic", align_corners=False)
    return torch.cat([weight[:1], patches.permute(0, 2, 3, 1).reshape(height * width, -1)])
