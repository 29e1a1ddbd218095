"""CLIP itself: both towers, their projections into the joint space, and the learned temperature;
plus the single-tower heads of the transformers API."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchclip.config import CLIPConfig, CLIPResNetVisionConfig, CLIPTextConfig, CLIPVisionConfig
from torchclip.modeling.base import PreTrainedModel
from torchclip.modeling.outputs import (
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
    ImageClassifierOutput,
)
from torchclip.modeling.resnet import CLIPResNetVisionModel
from torchclip.modeling.text import CLIPTextModel
from torchclip.modeling.vision import CLIPVisionModel


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """The paper's symmetric loss: cross-entropy over texts and over images, averaged."""
    labels = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels)) / 2


def normalize(embeds: torch.Tensor) -> torch.Tensor:
    """L2-normalise along the last axis, accumulating in fp32 whatever the input dtype."""
    norm = embeds.float().pow(2).sum(dim=-1, keepdim=True).sqrt()
    return (embeds.float() / norm).to(embeds.dtype)


def build_vision_tower(config: CLIPVisionConfig | CLIPResNetVisionConfig) -> nn.Module:
    if isinstance(config, CLIPResNetVisionConfig):
        return CLIPResNetVisionModel(config)
    return CLIPVisionModel(config)


class CLIPModel(PreTrainedModel):
    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextModel(config.text_config)
        self.vision_model = build_vision_tower(config.vision_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        if isinstance(config.vision_config, CLIPResNetVisionConfig):
            if config.vision_config.output_dim != config.projection_dim:
                raise ValueError(
                    f"ResNet image tower outputs {config.vision_config.output_dim} features but "
                    f"projection_dim is {config.projection_dim}"
                )
            self.visual_projection: nn.Module = nn.Identity()  # its attention pool already projects
        else:
            self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    def init_weights(self) -> None:
        factor = self.config.initializer_factor
        self.text_model.init_weights()
        self.vision_model.init_weights()
        nn.init.normal_(self.text_projection.weight, std=self.text_projection.in_features**-0.5 * factor)
        if isinstance(self.visual_projection, nn.Linear):
            nn.init.normal_(self.visual_projection.weight, std=self.visual_projection.in_features**-0.5 * factor)
        nn.init.constant_(self.logit_scale, self.config.logit_scale_init_value)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Projected (not normalised) text embeddings [batch, projection_dim].

        Through the text tower's `pooled_embedding` (its fast path, modeling/packing.py), unless the caller
        gives its own `position_ids`, which packing would replace: then `forward()`.
        """
        if position_ids is None:
            pooled = self.text_model.pooled_embedding(input_ids, attention_mask)
        else:
            pooled = self.text_model(input_ids, attention_mask, position_ids, return_dict=True).pooler_output
        return self.text_projection(pooled)

    def get_image_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Projected (not normalised) image embeddings [batch, projection_dim], through the image tower's
        `pooled_embedding` (for a ViT its fast path, modeling/packing.py)."""
        return self.visual_projection(self.vision_model.pooled_embedding(pixel_values, interpolate_pos_encoding))

    # OpenAI's `clip` API: the same embeddings under OpenAI's names, and `model(image, text)` (see forward).

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """OpenAI's `model.encode_image`: `get_image_features`."""
        return self.get_image_features(image)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """OpenAI's `model.encode_text` on `clip.tokenize` output (zero-padded, no mask): `get_text_features`."""
        return self.get_text_features(text)

    def _openai_forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OpenAI's `model(image, text)`: (logits_per_image, logits_per_text)."""
        image_embeds = normalize(self.encode_image(image))
        text_embeds = normalize(self.encode_text(text))
        logits_per_image = self.logit_scale.exp() * image_embeds @ text_embeds.t()
        return logits_per_image, logits_per_image.t()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CLIPOutput | tuple:
        """transformers' forward. Called as OpenAI's `model(image, text)` (a float image batch first, token
        ids second, positionally) it returns OpenAI's `(logits_per_image, logits_per_text)` instead."""
        if (
            isinstance(input_ids, torch.Tensor)
            and input_ids.is_floating_point()
            and isinstance(pixel_values, torch.Tensor)
            and not pixel_values.is_floating_point()
        ):
            return self._openai_forward(input_ids, pixel_values)
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        vision_outputs = self.vision_model(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        text_outputs = self.text_model(
            input_ids,
            attention_mask,
            position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        image_embeds = normalize(self.visual_projection(vision_outputs.pooler_output))
        text_embeds = normalize(self.text_projection(text_outputs.pooler_output))
        logits_per_text = (text_embeds @ image_embeds.t()) * self.logit_scale.exp()
        logits_per_image = logits_per_text.t()
        loss = contrastive_loss(logits_per_text) if return_loss else None
        out = CLIPOutput(
            loss, logits_per_image, logits_per_text, text_embeds, image_embeds, text_outputs, vision_outputs
        )
        return out if return_dict else out.to_tuple()


class CLIPTextModelWithProjection(PreTrainedModel):
    config_class = CLIPTextConfig

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextModel(config)
        self.text_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def init_weights(self) -> None:
        self.text_model.init_weights()
        nn.init.normal_(self.text_projection.weight, std=self.config.hidden_size**-0.5 * self.config.initializer_factor)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CLIPTextModelOutput | tuple:
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        text: BaseModelOutputWithPooling = self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, return_dict=True
        )
        out = CLIPTextModelOutput(
            self.text_projection(text.pooler_output),
            text.last_hidden_state,
            text.hidden_states,
            text.attentions,
        )
        return out if return_dict else out.to_tuple()


class CLIPVisionModelWithProjection(PreTrainedModel):
    config_class = CLIPVisionConfig
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.vision_model = CLIPVisionModel(config)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def init_weights(self) -> None:
        self.vision_model.init_weights()
        std = self.config.hidden_size**-0.5 * self.config.initializer_factor
        nn.init.normal_(self.visual_projection.weight, std=std)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CLIPVisionModelOutput | tuple:
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        vision: BaseModelOutputWithPooling = self.vision_model(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, return_dict=True
        )
        out = CLIPVisionModelOutput(
            self.visual_projection(vision.pooler_output),
            vision.last_hidden_state,
            vision.hidden_states,
            vision.attentions,
        )
        return out if return_dict else out.to_tuple()


class CLIPForImageClassification(PreTrainedModel):
    """The image tower with a linear classifier on the mean of the patch tokens (not the class token),
    as transformers defines it."""

    config_class = CLIPConfig
    main_input_name = "pixel_values"
    optional_keys = ("classifier.",)  # a new head when fine-tuning from a CLIPModel checkpoint

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.vision_model = CLIPVisionModel(config.vision_config)
        hidden = config.vision_config.hidden_size
        self.classifier = nn.Linear(hidden, self.num_labels) if self.num_labels > 0 else nn.Identity()
        self.post_init()

    def init_weights(self) -> None:
        self.vision_model.init_weights()
        self.init_head()

    def init_head(self) -> None:
        if isinstance(self.classifier, nn.Linear):
            std = self.config.vision_config.hidden_size**-0.5 * self.config.initializer_factor
            nn.init.normal_(self.classifier.weight, std=std)
            nn.init.zeros_(self.classifier.bias)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        vision: BaseModelOutputWithPooling = self.vision_model(
            pixel_values, output_attentions, output_hidden_states, return_dict=True
        )
        logits = self.classifier(vision.last_hidden_state[:, 1:, :].mean(dim=1))
        loss = None if labels is None else self._loss(logits, labels)
        out = ImageClassifierOutput(loss, logits, vision.hidden_states, vision.attentions)
        return out if return_dict else out.to_tuple()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' rule: regression for one label, single-label for integer labels, else multi-label."""
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
