"""The embedding paths' fast path: compute only what a tower's `pooler_output` depends on.

- `last_layer_at`: in the last layer only the pooled positions are read (the class token of an image, the
  end token of a text), so only they go through the query, the output projection and the MLP.
- `pooled_text`: text sequences packed end to end into as few rows as fit, so that positions after an end
  token (padding) are never computed.

`CLIPVisionModel.pooled_embedding` and `CLIPTextModel.pooled_embedding` call them; `forward()` never does.
Results equal the plain computation to float rounding (tests/test_inference_paths.py); what they save is
measured by `torchclip bench` and described in docs/performance.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from torchclip.modeling.fast import linear
from torchclip.modeling.layers import EncoderLayer, additive_mask, attend

if TYPE_CHECKING:
    from torchclip.modeling.text import CLIPTextModel

SHARED = -2  # segment id of a row's shared first token
PADDING = -1  # segment id of a row's unused columns


def last_layer_at(
    layer: EncoderLayer,
    x: torch.Tensor,
    rows: torch.Tensor,
    columns: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`layer(x)` [n, width] at positions (rows[i], columns[i]) only, e.g. the pooled token in a tower's last
    layer: keys and values are needed at every position, but queries, the output projection and the MLP
    only where the output is read."""
    attn = layer.self_attn
    width = x.shape[-1]
    h = layer.layer_norm1(x)
    kv = linear(h, attn.in_proj.weight[width:], attn.in_proj.bias[width:])  # [batch, length, 2 * width]
    q = linear(h[rows, columns], attn.in_proj.weight[:width], attn.in_proj.bias[:width])  # [n, width]
    k, v = kv[rows].view(len(rows), -1, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q = q.view(len(rows), attn.num_heads, 1, attn.head_dim)
    mask = None if attn_mask is None else attn_mask[rows, :, columns, None, :]
    out, _ = attend(q, k, v, mask)
    y = attn.out_proj(out.reshape(len(rows), width)).add_(x[rows, columns])
    return layer.mlp(layer.layer_norm2(y)).add_(y)


def can_pack(input_ids: torch.Tensor, ends: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """Whether packing gives the padded computation's result: no padding before any sequence's end token."""
    if attention_mask is None:
        return True
    before_end = torch.arange(input_ids.shape[-1], device=ends.device) <= ends[:, None]
    return bool(attention_mask.bool()[before_end].all())


def pooled_text(model: CLIPTextModel, input_ids: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """The text tower's `pooler_output` for `input_ids` [batch, length] whose end tokens are at `ends`.

    The causal mask means positions after a sequence's end token cannot change its pooled state, so they
    are never computed, even when the caller padded to 77: sequences are packed end to end into as few rows
    as fit, each attending only to its own earlier tokens (block-diagonal causal mask), with its own
    positions. In the last layer only the end tokens' outputs are read (`last_layer_at`). And a first token
    shared by every sequence (the start token) attends only to itself, so its state is the same in all of
    them: each row computes it once, in its first column, for all the sequences it holds.
    """
    shared = int(bool((input_ids[:, 0] == input_ids[0, 0]).all() and (ends > 0).all()))
    lengths = (ends + 1 - shared).tolist()
    rows = choose_rows(lengths, shared, model.embeddings.position_embedding.num_embeddings)
    tokens, positions, segments, pooled_at = packed_inputs(input_ids, ends, rows, shared)
    same_sequence = segments[:, None, :, None] == segments[:, None, None, :]
    seen_by_all = (segments == SHARED)[:, None, None, :]
    x = model.embeddings(tokens, positions)
    mask = additive_mask((same_sequence | seen_by_all) & torch.ones_like(same_sequence[0, 0]).tril(), x.dtype)
    x, _, _ = model.encoder(x, mask, num_layers=len(model.encoder.layers) - 1)
    last = model.encoder.layers[-1]
    return model.final_layer_norm(last_layer_at(last, x, pooled_at[:, 0], pooled_at[:, 1], mask))


def choose_rows(lengths: list[int], shared: int, max_width: int) -> list[list[int]]:
    """Pack sequences into rows, at the row width that leaves the least to compute.

    The projections and MLPs cost every column of every row, empty ones included, while attention costs
    each token in proportion to its row's width, and narrow rows are left partly empty more often. So
    first-fit decreasing is tried at each width from the longest sequence (at least 32) to about twice it,
    and the cheapest packing kept, by rows x width x (1 + width / 200): that weight on attention measured
    best in fp32 and bf16 (`torchclip bench`'s caption mix: +3-6% over a fixed width of twice the longest;
    docs/performance.md).
    """
    longest = max(lengths) + shared
    narrowest = min(max_width, max(32, longest))
    best_rows, best_cost = [], float("inf")
    for width in range(narrowest, max(narrowest, min(max_width, 2 * longest + 12)) + 1):
        rows = pack_sequences(lengths, width - shared)
        used = shared + max(sum(lengths[i] for i in row) for row in rows)  # the packed tensor's width
        cost = len(rows) * used * (1 + used / 200)
        if cost < best_cost:
            best_rows, best_cost = rows, cost
    return best_rows


def pack_sequences(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group sequence indices into rows whose total length fits `capacity`."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, space in enumerate(free) if space >= lengths[index]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= lengths[index]
    return rows


def packed_inputs(
    input_ids: torch.Tensor, ends: torch.Tensor, rows: list[list[int]], shared: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, position ids and segment ids [rows, width], and where each input's end token landed.

    `shared` (0 or 1): whether every row begins with the first token all sequences share, each sequence
    then contributing its tokens from position 1.
    """
    device = input_ids.device
    order = torch.tensor([index for row in rows for index in row], device=device)
    row_of = torch.tensor([r for r, row in enumerate(rows) for _ in row], device=device)
    lengths = ends[order] + 1 - shared  # tokens each sequence contributes
    # each sequence starts where the previous one of its row ended
    offset = torch.cumsum(lengths, 0) - lengths
    row_first = torch.tensor([0] + [len(row) for row in rows[:-1]], device=device).cumsum(0)
    start = shared + offset - offset[row_first][row_of]
    # one entry per packed token: which sequence, which position in it, where it goes
    sequence = order.repeat_interleave(lengths)
    position = torch.arange(int(lengths.sum()), device=device) - offset.repeat_interleave(lengths) + shared
    row = row_of.repeat_interleave(lengths)
    column = start.repeat_interleave(lengths) + position - shared
    width = int((start + lengths).max())
    tokens = torch.zeros(len(rows), width, dtype=input_ids.dtype, device=device)
    positions = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    segments = torch.full((len(rows), width), PADDING, dtype=torch.long, device=device)
    if shared:
        tokens[:, 0] = input_ids[0, 0]
        segments[:, 0] = SHARED
    tokens[row, column] = input_ids[sequence, position]
    positions[row, column] = position
    segments[row, column] = sequence
    pooled_at = torch.empty(len(input_ids), 2, dtype=torch.long, device=device)
    pooled_at[order] = torch.stack([row_of, start + lengths - 1], dim=1)
    return tokens, positions, segments, pooled_at
