"""The image tower (ViT): patches + class token + positions, a transformer, and pooling at the class token."""

from __future__ import annotations

import torch
from torch import nn

from torchclip.config import CLIPVisionConfig
from torchclip.modeling.base import PreTrainedModel
from torchclip.modeling.fast import fused_fp32_linears
from torchclip.modeling.layers import Encoder, init_encoder, init_layer_norm, resize_position_embeddings
from torchclip.modeling.outputs import BaseModelOutputWithPooling
from torchclip.modeling.packing import last_layer_at


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size, bias=False
        )
        num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(num_positions, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(
                f"pixel_values are {height}x{width} but the model takes {self.image_size}x{self.image_size}; "
                "resize them, or pass interpolate_pos_encoding=True"
            )
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(batch, 1, -1)
        x = torch.cat([cls, patches], dim=1)
        if interpolate_pos_encoding:
            grid = (height // self.patch_size, width // self.patch_size)
            return x + resize_position_embeddings(self.position_embedding.weight, *grid)
        return x + self.position_embedding.weight


class CLIPVisionModel(PreTrainedModel):
    """The vision transformer without projection. `pooler_output` is the normalised class-token state."""

    config_class = CLIPVisionConfig
    checkpoint_prefix = "vision_model."
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # sic: the HF key
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def init_weights(self) -> None:
        factor, std = self.config.initializer_factor, self.config.initializer_range
        nn.init.normal_(self.embeddings.class_embedding, std=self.config.hidden_size**-0.5 * factor)
        nn.init.normal_(self.embeddings.patch_embedding.weight, std=std * factor)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=std * factor)
        init_layer_norm(self.pre_layrnorm)
        init_encoder(self.encoder, self.config.hidden_size, factor)
        init_layer_norm(self.post_layernorm)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        if pixel_values is None:
            raise ValueError("CLIPVisionModel needs pixel_values")
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        x, hidden_states, attentions = self.encoder(
            x, output_hidden_states=bool(output_hidden_states), output_attentions=bool(output_attentions)
        )
        pooled = self.post_layernorm(x[:, 0, :])
        out = BaseModelOutputWithPooling(x, pooled, hidden_states, attentions)
        return out if return_dict else out.to_tuple()

    @fused_fp32_linears()
    def pooled_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """`pooler_output` alone: what `get_image_features` projects.

        The fast path, `packing.last_layer_at`: the last layer runs its queries, output projection and MLP
        only at the class token, the one position read (ViT-B/32: ~7% of the work not done).
        """
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        x, _, _ = self.encoder(x, num_layers=len(self.encoder.layers) - 1)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.post_layernorm(last_layer_at(self.encoder.layers[-1], x, rows, torch.zeros_like(rows)))
