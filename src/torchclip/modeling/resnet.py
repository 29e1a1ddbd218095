"""OpenAI's modified ResNet image tower (RN50, RN101, RN50x4, RN50x16, RN50x64).

It differs from torchvision's ResNet in three ways: a stem of three 3x3 convolutions followed by an average
pool (instead of one 7x7 convolution and a max pool); anti-aliased downsampling, where every strided step is an
average pool placed before a stride-1 convolution; and an attention-pooling head instead of global average
pooling: one query (the mean of the final feature map) attends over the map plus learned position embeddings,
and the head's output projection maps straight into the joint embedding space (so `CLIPModel` uses no
separate `visual_projection` for this tower).

transformers has no such tower. torchclip names its weights (under `vision_model.` inside a
`CLIPModel` checkpoint) as follows, with OpenAI's original names for comparison:

    stem.conv1 / bn1 / conv2 / bn2 / conv3 / bn3        visual.conv1 / bn1 / conv2 / bn2 / conv3 / bn3
    stages.{s}.{b}.conv1 / bn1 / conv2 / bn2 / conv3 / bn3
                                                        visual.layer{s+1}.{b}.conv1 / ... / bn3
    stages.{s}.{b}.downsample.conv / downsample.bn      visual.layer{s+1}.{b}.downsample.0 / downsample.1
    attention_pool.position_embedding.weight            visual.attnpool.positional_embedding
    attention_pool.q_proj / k_proj / v_proj             visual.attnpool.q_proj / k_proj / v_proj
    attention_pool.out_proj                             visual.attnpool.c_proj

Outputs: `pooler_output` is the attention pool's output [batch, output_dim] (already in the joint space);
`last_hidden_state` is the final feature map as tokens [batch, height * width, width * 32], row-major over the
map (the tokens the attention pool reads, before its mean token and position embeddings are added);
`hidden_states` (when asked) are the stem's and each stage's feature maps in the same token layout;
`attentions` (when asked) holds the pool's attention weights [batch, heads, 1, 1 + height * width].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchclip.config import CLIPResNetVisionConfig
from torchclip.modeling.base import PreTrainedModel
from torchclip.modeling.layers import resize_position_embeddings
from torchclip.modeling.outputs import BaseModelOutputWithPooling
from torchclip.modeling.qkv import separate_qkv_in_state_dict

EXPANSION = 4  # a bottleneck block's output has 4x the channels of its inner convolutions


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class Stem(nn.Module):
    """Three 3x3 convolutions (the first with stride 2), then a 2x2 average pool: 1/4 of the input size."""

    def __init__(self, num_channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_channels, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2, self.bn2 = _conv_bn(width // 2, width // 2, 3)
        self.conv3, self.bn3 = _conv_bn(width // 2, width, 3)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.pool(x)


class Downsample(nn.Module):
    """The shortcut of a block that changes size or width: average pool (when strided), 1x1 convolution, norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.pool(x)))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> (average pool when strided) -> 1x1, with a residual connection."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = _conv_bn(planes, planes * EXPANSION, 1)
        needs_shortcut = stride > 1 or in_channels != planes * EXPANSION
        self.downsample = Downsample(in_channels, planes * EXPANSION, stride) if needs_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.pool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """One query, the mean of the feature map, attends over [mean; map] with learned position embeddings.

    Only the mean token's output is used, so only its query is computed (OpenAI's code computes all
    1 + height * width queries and keeps the first; the result is the same). Query, key and value weights are
    one fused `in_proj`, shown in the state dict as `q_proj` / `k_proj` / `v_proj` like the transformer's.
    """

    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"attention pool: {embed_dim} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.position_embedding = nn.Embedding(grid_size**2 + 1, embed_dim)
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, output_dim)
        separate_qkv_in_state_dict(self)

    def forward(
        self, tokens: torch.Tensor, height: int, width: int, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, channels = tokens.shape
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        x = x + resize_position_embeddings(self.position_embedding.weight, height, width).to(x.dtype)
        heads, head_dim = self.num_heads, channels // self.num_heads
        weight, bias = self.in_proj.weight, self.in_proj.bias
        q = F.linear(x[:, :1], weight[:channels], bias[:channels]).view(batch, 1, heads, head_dim).transpose(1, 2)
        kv = F.linear(x, weight[channels:], bias[channels:]).view(batch, length + 1, 2, heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, 1 + length, head_dim]
        weights = None
        if need_weights:
            weights = ((q @ k.transpose(-1, -2)) * head_dim**-0.5).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.reshape(batch, channels)), weights


class CLIPResNetVisionModel(PreTrainedModel):
    """OpenAI's modified ResNet as a CLIP image tower; `pooler_output` is already in the joint embedding space."""

    config_class = CLIPResNetVisionConfig
    checkpoint_prefix = "vision_model."
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPResNetVisionConfig):
        super().__init__()
        self.config = config
        if config.image_size % 32:
            raise ValueError(f"CLIPResNetVisionConfig.image_size must be a multiple of 32, got {config.image_size}")
        self.stem = Stem(config.num_channels, config.width)
        stages = []
        in_channels = config.width
        for index, depth in enumerate(config.layers):
            planes = config.width * 2**index
            blocks = [Bottleneck(in_channels, planes, stride=1 if index == 0 else 2)]
            in_channels = planes * EXPANSION
            blocks += [Bottleneck(in_channels, planes) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        grid = config.image_size // 32
        self.attention_pool = AttentionPool2d(grid, config.hidden_size, config.heads, config.output_dim)
        self.post_init()

    def init_weights(self) -> None:
        """OpenAI's initialisation: PyTorch's defaults, then normal(0, channels^-0.5) attention-pool weights
        and position embeddings, and zero scale on each block's last norm (each block starts as identity)."""
        factor = self.config.initializer_factor
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                module.reset_parameters()
        pool = self.attention_pool
        std = self.config.hidden_size**-0.5 * factor
        nn.init.normal_(pool.position_embedding.weight, std=std)
        for linear in (pool.in_proj, pool.out_proj):
            nn.init.normal_(linear.weight, std=std)
        for stage in self.stages:
            for block in stage:
                nn.init.zeros_(block.bn3.weight)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        if pixel_values is None:
            raise ValueError("CLIPResNetVisionModel needs pixel_values")
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        height, width = pixel_values.shape[-2:]
        size = self.config.image_size
        if not interpolate_pos_encoding and (height != size or width != size):
            raise ValueError(
                f"pixel_values are {height}x{width} but the model takes {size}x{size}; "
                "resize them, or pass interpolate_pos_encoding=True"
            )
        if height % 32 or width % 32:
            raise ValueError(f"pixel_values are {height}x{width}; the ResNet tower needs multiples of 32")
        x = self.stem(pixel_values.to(self.stem.conv1.weight.dtype))
        maps = [x] if output_hidden_states else None
        for stage in self.stages:
            x = stage(x)
            if maps is not None:
                maps.append(x)
        tokens = _as_tokens(x)
        pooled, weights = self.attention_pool(tokens, x.shape[2], x.shape[3], need_weights=bool(output_attentions))
        out = BaseModelOutputWithPooling(
            tokens,
            pooled,
            tuple(_as_tokens(m) for m in maps) if maps is not None else None,
            (weights,) if weights is not None else None,
        )
        return out if return_dict else out.to_tuple()

    def pooled_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """`pooler_output` alone: what `get_image_features` returns (this tower has no fast path)."""
        return self.forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).pooler_output


def _as_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """[batch, channels, height, width] -> [batch, height * width, channels]."""
    return feature_map.flatten(2).transpose(1, 2)
