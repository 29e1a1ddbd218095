"""CLIP model classes (see clip.py for the whole model, text.py and vision.py for the towers)."""

from torchclip.modeling.clip import (
    CLIPForImageClassification,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
)
from torchclip.modeling.outputs import (
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
    ImageClassifierOutput,
    ModelOutput,
)
from torchclip.modeling.resnet import CLIPResNetVisionModel
from torchclip.modeling.text import CLIPTextModel
from torchclip.modeling.vision import CLIPVisionModel

__all__ = [
    "BaseModelOutputWithPooling",
    "CLIPForImageClassification",
    "CLIPModel",
    "CLIPOutput",
    "CLIPResNetVisionModel",
    "CLIPTextModel",
    "CLIPTextModelOutput",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelOutput",
    "CLIPVisionModelWithProjection",
    "ImageClassifierOutput",
    "ModelOutput",
]
