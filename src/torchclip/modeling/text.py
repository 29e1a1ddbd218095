"""The text tower: token + position embeddings, a causal transformer, and pooling at the end token."""

from __future__ import annotations

import torch
from torch import nn

from torchclip.config import CLIPTextConfig
from torchclip.modeling.base import PreTrainedModel
from torchclip.modeling.fast import fused_fp32_linears
from torchclip.modeling.layers import Encoder, causal_padding_mask, init_encoder, init_layer_norm
from torchclip.modeling.outputs import BaseModelOutputWithPooling
from torchclip.modeling.packing import can_pack, pooled_text


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
        """Index of the end-of-text token in each row, exactly as transformers chooses it.

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
    def pooled_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`pooler_output` alone: what `get_text_features` projects.

        The fast path, `packing.pooled_text`, computes only what the end tokens' states depend on (padding
        never), equal to `forward()` to float rounding. Padding before an end token takes `forward()`.
        """
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        ends = self.pooled_positions(input_ids)
        if attention_mask is not None:
            attention_mask = attention_mask.view(-1, attention_mask.shape[-1])
        if can_pack(input_ids, ends, attention_mask):
            return pooled_text(self, input_ids, ends)
        return self.forward(input_ids, attention_mask, return_dict=True).pooler_output
