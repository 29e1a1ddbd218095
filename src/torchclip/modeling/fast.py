"""CPU speed switches and kernels, in one place: the only spots where the model departs from the plain path.

- `linear` / `Linear`: oneDNN's matrix multiply with the bias fused in, for CPU inference (bf16 always, fp32
  inside `fused_fp32_linears()`); `F.linear` everywhere else.
- `use_sdpa`: whether attention takes `scaled_dot_product_attention` or two batched matrix multiplies with an
  fp32 softmax (`layers.attend` holds both paths).

The work the embedding paths skip (packed text, the last layer at the pooled positions only) is in
`packing.py`. What each switch buys is measured by `torchclip bench` (`benchmarks/bench_inference.py`) and
described in docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN builds bf16 kernels only on CPUs with AVX-512 or AMX; on AVX2-only CPUs (e.g. AMD Zen 3) it refuses
# to create the primitive, and bf16 takes `F.linear` (PyTorch's own kernel) instead.
_ONEDNN_BF16 = _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()
_FUSED_FP32 = ContextVar("torchclip_fused_fp32", default=False)

# Up to this many keys, bf16 attention on the CPU takes two matrix multiplies instead of PyTorch's flash
# kernel (see `use_sdpa`).
MATMUL_ATTENTION_MAX_KEYS = 160


def cpu_has_bf16_kernels() -> bool:
    """Whether this CPU runs bf16 matrix multiplies in oneDNN's kernels. Without them (AVX2-only CPUs)
    PyTorch's own bf16 kernel is several times slower than fp32: `torchclip bench` prints both matmul rates."""
    return _ONEDNN_BF16


@contextmanager
def fused_fp32_linears() -> Iterator[None]:
    """Within it, fp32 inference projections also take oneDNN's fused-bias kernel.

    Faster than `addmm` (docs/performance.md, "Fused-bias projections"), but it sums in another order, with
    about twice MKL's rounding error (still ~1e-6 relative). The embedding paths (`pooled_embedding`, hence
    `get_*_features` and everything built on them) use it: their results stay within 1e-5 of transformers'.
    `forward()` keeps `addmm`, so that every hidden state of a deep tower stays within 1e-5 of transformers'
    too.
    """
    token = _FUSED_FP32.set(True)
    try:
        yield
    finally:
        _FUSED_FP32.reset(token)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear`, or for CPU inference oneDNN's matrix multiply with the bias fused in.

    `F.linear` lowers to `addmm`, which first copies the broadcast bias into the output and then
    accumulates into it; in bf16 that copy is a sizeable part of each projection (docs/performance.md).
    bf16 inference takes the fused kernel where oneDNN supports bf16; fp32 inference only inside
    `fused_fp32_linears()`.
    Training (autograd) and other devices take the ordinary path.
    """
    if (
        _ONEDNN
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and ((x.dtype == torch.bfloat16 and _ONEDNN_BF16) or (x.dtype == torch.float32 and _FUSED_FP32.get()))
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()  # inductor fuses the bias itself
    ):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` through `linear()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def use_sdpa(k: torch.Tensor) -> bool:
    """Whether attention over these keys [batch, heads, length, head_dim] takes `scaled_dot_product_attention`.

    Not for short bf16 sequences on the CPU: PyTorch's CPU flash kernel is slow there, and two batched matrix
    multiplies with an fp32 softmax were 1.4-2.5x faster from 37 to `MATMUL_ATTENTION_MAX_KEYS` tokens (slower
    from ~180; `torchclip bench --precision bfloat16`, docs/performance.md, "Attention"). The scores are then
    rounded to bf16 before the softmax (the flash kernel keeps them in fp32); the bf16 vs fp32 embedding
    cosine measured the same either way (benchmarks/bf16_agreement.py).
    """
    return not (k.device.type == "cpu" and k.dtype == torch.bfloat16 and k.shape[-2] <= MATMUL_ATTENTION_MAX_KEYS)
