"""The transformer both towers share: pre-LayerNorm residual blocks of attention and an MLP.

Attention keeps one fused `in_proj` (query, key and value in one matrix multiply, as OpenAI's original
does) while the state dict shows the reference's separate `q_proj` / `k_proj` / `v_proj` keys, so HF
checkpoints load and save unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


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


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_FUSED_FP32 = ContextVar("torchclip_fused_fp32", default=False)


@contextmanager
def fused_fp32_linears() -> Iterator[None]:
    """Within it, fp32 inference projections also take oneDNN's fused-bias kernel.

    ~10-15% faster than `addmm` on this CPU, but it sums in another order, with about twice MKL's
    rounding error (still ~1e-6 relative). The embedding paths (`pooled_output`, hence `get_*_features`
    and everything built on them) use it: their results stay within 1e-5 of the reference's. `forward()`
    keeps `addmm`, so that every hidden state of a deep tower stays within 1e-5 of the reference too.
    """
    token = _FUSED_FP32.set(True)
    try:
        yield
    finally:
        _FUSED_FP32.reset(token)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear`, or for CPU inference oneDNN's matrix multiply with the bias fused in.

    `F.linear` lowers to `addmm`, which first copies the broadcast bias into the output and then
    accumulates into it: on a ViT-B/32 forward in bf16 that copy costs ~20% of each projection. bf16
    inference always takes the fused kernel; fp32 inference only inside `fused_fp32_linears()`. Training
    (autograd) and other devices take the ordinary path.
    """
    if (
        _ONEDNN
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and (x.dtype == torch.bfloat16 or (x.dtype == torch.float32 and _FUSED_FP32.get()))
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()  # inductor fuses the bias itself
    ):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` through `linear()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Attention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection (see `attend`)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.in_proj = Linear(hidden_size, 3 * hidden_size)
        self.out_proj = Linear(hidden_size, hidden_size)
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_fuse_qkv)

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

    `scaled_dot_product_attention`, or two batched matrix multiplies with an fp32 softmax where those are
    faster (`_matmul_attention_is_faster`) or the attention weights themselves are asked for.
    """
    if not (need_weights or _matmul_attention_is_faster(k)):
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


def _matmul_attention_is_faster(k: torch.Tensor) -> bool:
    """PyTorch's CPU flash-attention kernel is slow on short bf16 sequences: two batched matrix multiplies
    with an fp32 softmax ran 1.4-2.5x faster here from 37 to 160 tokens (slower from ~180).

    The scores are rounded to bf16 before the softmax (the flash kernel keeps them in fp32); the bf16 vs
    fp32 embedding cosine measured the same either way (benchmarks/bf16_agreement.py).
    """
    return k.device.type == "cpu" and k.dtype == torch.bfloat16 and k.shape[-2] <= 160


def _split_qkv(module: Attention, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict(): show the fused projection as the reference's q_proj / k_proj / v_proj."""
    for kind in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}in_proj.{kind}")
        for name, part in zip(("q", "k", "v"), fused.chunk(3)):
            state_dict[f"{prefix}{name}_proj.{kind}"] = part


def _fuse_qkv(module: Attention, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict(): accept the reference's separate projections."""
    fuse_qkv_keys(state_dict, prefix)


def fuse_qkv_keys(state_dict: dict[str, Any], prefix: str) -> None:
    """Replace `{prefix}q_proj/k_proj/v_proj.*` by the fused `{prefix}in_proj.*`, in place."""
    for kind in ("weight", "bias"):
        names = [f"{prefix}{name}_proj.{kind}" for name in ("q", "k", "v")]
        if all(name in state_dict for name in names):
            state_dict[f"{prefix}in_proj.{kind}"] = torch.cat([state_dict.pop(name) for name in names])


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.activation_fn = get_activation(hidden_act)
        self.fc1 = Linear(hidden_size, intermediate_size)
        self.fc2 = Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd the activation overwrites fc1's output instead of allocating two more buffers
        # of [tokens, intermediate_size]: every fresh large buffer is page-faulted in anew, which cost
        # ~10% of a ViT-B/32 forward here.
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

    def output_at(
        self, x: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The layer's output [n, width] at positions (rows[i], columns[i]) only, e.g. the pooled token
        in a tower's last layer: keys and values are needed at every position, but queries, the output
        projection and the MLP only where the output is read."""
        attn = self.self_attn
        width = x.shape[-1]
        h = self.layer_norm1(x)
        kv = linear(h, attn.in_proj.weight[width:], attn.in_proj.bias[width:])  # [batch, length, 2 * width]
        q = linear(h[rows, columns], attn.in_proj.weight[:width], attn.in_proj.bias[:width])  # [n, width]
        k, v = kv[rows].view(len(rows), -1, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = q.view(len(rows), attn.num_heads, 1, attn.head_dim)
        mask = None if attn_mask is None else attn_mask[rows, :, columns, None, :]
        out, _ = attend(q, k, v, mask)
        y = attn.out_proj(out.reshape(len(rows), width)).add_(x[rows, columns])
        return self.mlp(self.layer_norm2(y)).add_(y)


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


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `allowed`, the dtype's most negative number elsewhere: the form attention adds to its scores.

    Masks are passed to the layers in this form because `scaled_dot_product_attention` converts a
    boolean mask to it on every call, i.e. in every layer (in bf16 that conversion took a third of
    the attention's time for packed text). The reference's finite minimum rather than -inf: a query that
    may see nothing (a left-padded position) then gets uniform weights instead of NaN, which would
    spread to every token through the next layer's values.
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def causal_padding_mask(attention_mask: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive [batch, 1, length, length] mask: a query sees earlier positions that are not padding."""
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    return additive_mask(causal & attention_mask.bool()[:, None, None, :], dtype)


def init_encoder(encoder: Encoder, hidden_size: int, factor: float = 1.0) -> None:
    """OpenAI's initialisation of the residual blocks (also the reference's)."""
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
