"""CLIP model classes.

Read clip.py for the whole model; text.py, vision.py and resnet.py for the towers; layers.py for the
transformer both transformer towers share; base.py for loading and saving. The CPU speed paths are apart:
fast.py (kernels and switches) and packing.py (the embedding paths that compute only the pooled state).
"""

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
