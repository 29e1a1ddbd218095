"""The text tower: token + position embeddings, a causal transformer, and pooling at the end token."""

from __future__ import annotations

import torch
from torch import nn

from torchclip.checkpoint import PreTrainedModel
from torchclip.config import CLIPTextConfig
from torchclip.modeling.layers import (
    Encoder,
    additive_mask,
    causal_padding_mask,
    fused_fp32_linears,
    init_encoder,
    init_layer_norm,
)
from torchclip.modeling.outputs import BaseModelOutputWithPooling


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[-1]
        max_length = self.position_embedding.num_embeddings
        if length > max_length:
            raise ValueError(
                f"input_ids has {length} positions but the model has only {max_length} "
                "(max_position_embeddings); tokenize with truncation=True"
            )
        if position_ids is None:
            positions = self.position_embedding.weight[:length]
        else:
            positions = self.position_embedding(position_ids)
        return self.token_embedding(input_ids) + positions


class CLIPTextModel(PreTrainedModel):
    """The text transformer without projection. `pooler_output` is the final state at the end token."""

    config_class = CLIPTextConfig
    checkpoint_prefix = "text_model."

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def init_weights(self) -> None:
        factor = self.config.initializer_factor
        nn.init.normal_(self.embeddings.token_embedding.weight, std=0.02 * factor)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.02 * factor)
        init_encoder(self.encoder, self.config.hidden_size, factor)
        init_layer_norm(self.final_layer_norm)

    def pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index of the end-of-text token in each row, exactly as the reference chooses it.

        Old configs say `eos_token_id: 2` (a placeholder) and pool at the largest id, which is the end
        token in OpenAI's vocabulary; newer ones pool at the first `eos_token_id`.
        """
        if self.config.eos_token_id == 2:
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids == self.config.eos_token_id).to(torch.int).argmax(dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        if input_ids is None:
            raise ValueError("CLIPTextModel needs input_ids")
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        x = self.embeddings(input_ids, position_ids)
        length = input_ids.shape[-1]
        if attention_mask is None or bool(attention_mask.all()):
            mask, is_causal = None, True
        else:
            mask, is_causal = causal_padding_mask(attention_mask.view(-1, length), length, x.dtype), False
        x, hidden_states, attentions = self.encoder(
            x, mask, is_causal, bool(output_hidden_states), bool(output_attentions)
        )
        x = self.final_layer_norm(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), self.pooled_positions(input_ids).to(x.device)]
        out = BaseModelOutputWithPooling(x, pooled, hidden_states, attentions)
        return out if return_dict else out.to_tuple()

    @fused_fp32_linears()
    def pooled_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`pooler_output` alone, computing only what it depends on.

        The causal mask means positions after a sequence's end token cannot change its pooled state, so
        they are never computed, even when the caller padded to 77: sequences are packed end to end into
        as few rows as fit, each attending only to its own earlier tokens (block-diagonal causal mask),
        with its own positions. And in the last layer only the end tokens' outputs are ever read, so only
        they go through the query, output projection and MLP. Finally, a first token shared by every
        sequence (the start token) attends only to itself, so its state is the same in all of them: each
        row computes it once, in its first column, for all the sequences it holds. Equal to the padded
        computation (to float rounding).
        """
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        ends = self.pooled_positions(input_ids)
        if attention_mask is not None:
            attention_mask = attention_mask.view(-1, attention_mask.shape[-1])
            before_end = torch.arange(input_ids.shape[-1], device=ends.device) <= ends[:, None]
            if not bool(attention_mask.bool()[before_end].all()):  # padding inside a sequence: no packing
                return self.forward(input_ids, attention_mask, return_dict=True).pooler_output
        shared = int(bool((input_ids[:, 0] == input_ids[0, 0]).all() and (ends > 0).all()))
        lengths = (ends + 1 - shared).tolist()
        rows = choose_rows(lengths, shared, self.embeddings.position_embedding.num_embeddings)
        tokens, positions, segments, pooled_at = _packed_inputs(input_ids, ends, rows, shared)
        same_sequence = segments[:, None, :, None] == segments[:, None, None, :]
        seen_by_all = (segments == SHARED)[:, None, None, :]
        x = self.embeddings(tokens, positions)
        mask = additive_mask((same_sequence | seen_by_all) & torch.ones_like(same_sequence[0, 0]).tril(), x.dtype)
        x, _, _ = self.encoder(x, mask, num_layers=len(self.encoder.layers) - 1)
        last = self.encoder.layers[-1]
        return self.final_layer_norm(last.output_at(x, pooled_at[:, 0], pooled_at[:, 1], mask))


def choose_rows(lengths: list[int], shared: int, max_width: int) -> list[list[int]]:
    """Pack sequences into rows, at the row width that leaves the least to compute.

    The projections and MLPs cost every column of every row, empty ones included, while attention costs
    each token in proportion to its row's width, and narrow rows are left partly empty more often. So
    first-fit decreasing is tried at each width from the longest sequence (at least 32) to about twice it,
    and the cheapest packing kept, by rows x width x (1 + width / 200): that weight on attention measured
    best here in fp32 and bf16 (caption mix: +3-6% over a fixed width of twice the longest).
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


SHARED = -2  # segment id of a row's shared first token
PADDING = -1  # segment id of a row's unused columns


def _packed_inputs(
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
