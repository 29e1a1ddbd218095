"""transformers' ModelTesterMixin and ConfigTester (from the pinned sdist, unchanged) on torchclip's models.

The model testers are this project's: they build small configs and random inputs in the way transformers'
own CLIP tests describe them (2 layers, width 32, 30 px images of 2 px patches, 7-token texts), since the
sdist does not ship tests/models/clip/.
"""

from __future__ import annotations

import unittest

import torch
from targets import target_class
from transformers_tests.test_configuration_common import ConfigTester
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor, random_attention_mask

CLIPConfig = target_class("CLIPConfig")
CLIPForImageClassification = target_class("CLIPForImageClassification")
CLIPModel = target_class("CLIPModel")
CLIPTextConfig = target_class("CLIPTextConfig")
CLIPTextModel = target_class("CLIPTextModel")
CLIPTextModelWithProjection = target_class("CLIPTextModelWithProjection")
CLIPVisionConfig = target_class("CLIPVisionConfig")
CLIPVisionModel = target_class("CLIPVisionModel")
CLIPVisionModelWithProjection = target_class("CLIPVisionModelWithProjection")


class VisionTester:
    def __init__(self, parent, batch_size=12, image_size=30, patch_size=2, is_training=True):
        self.parent = parent
        self.batch_size, self.image_size, self.patch_size = batch_size, image_size, patch_size
        self.num_channels, self.hidden_size, self.projection_dim = 3, 32, 32
        self.num_hidden_layers, self.num_attention_heads, self.intermediate_size = 2, 4, 37
        self.is_training = is_training
        self.seq_length = (image_size // patch_size) ** 2 + 1

    def get_config(self):
        return CLIPVisionConfig(
            image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, projection_dim=self.projection_dim, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            dropout=0.1, attention_dropout=0.1, initializer_range=0.02,
        )  # fmt: skip

    def prepare_config_and_inputs(self):
        pixels = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), pixels

    def prepare_config_and_inputs_for_common(self):
        config, pixels = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixels}


class TextTester:
    def __init__(self, parent, batch_size=12, seq_length=7, is_training=True):
        self.parent = parent
        self.batch_size, self.seq_length, self.is_training = batch_size, seq_length, is_training
        self.vocab_size, self.hidden_size, self.projection_dim = 99, 32, 32
        self.num_hidden_layers, self.num_attention_heads, self.intermediate_size = 2, 4, 37
        self.max_position_embeddings = 512

    def get_config(self):
        return CLIPTextConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, projection_dim=self.projection_dim,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size, dropout=0.1, attention_dropout=0.1,
            max_position_embeddings=self.max_position_embeddings, initializer_range=0.02,
        )  # fmt: skip

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        mask = random_attention_mask([self.batch_size, self.seq_length])
        for row, start in enumerate(torch.randint(1, self.seq_length - 1, (self.batch_size,)).tolist()):
            mask[row, :start] = 1  # a real prefix, then padding, as a tokenizer pads
            mask[row, start:] = 0
        return self.get_config(), input_ids, mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": mask}


class CLIPTester:
    def __init__(self, parent, is_training=True):
        self.parent = parent
        self.text_model_tester = TextTester(parent)
        self.vision_model_tester = VisionTester(parent)
        self.batch_size = self.text_model_tester.batch_size
        self.is_training = is_training
        self.seq_length = self.text_model_tester.seq_length
        self.text_config = self.text_model_tester.get_config().to_dict()
        self.vision_config = self.vision_model_tester.get_config().to_dict()

    def get_config(self):
        return CLIPConfig(
            text_config=self.text_model_tester.get_config().to_dict(),
            vision_config=self.vision_model_tester.get_config().to_dict(),
            projection_dim=64,
        )

    def prepare_config_and_inputs_for_common(self):
        _, input_ids, mask = self.text_model_tester.prepare_config_and_inputs()
        _, pixels = self.vision_model_tester.prepare_config_and_inputs()
        inputs = {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels, "return_loss": False}
        return self.get_config(), inputs


class ClassificationTester(CLIPTester):
    def prepare_config_and_inputs_for_common(self):
        _, pixels = self.vision_model_tester.prepare_config_and_inputs()
        return self.get_config(), {"pixel_values": pixels}


class CLIPVisionModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CLIPVisionModel, CLIPVisionModelWithProjection)
    has_attentions = True
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = VisionTester(self)
        self.config_tester = ConfigTester(self, config_class=CLIPVisionConfig, has_text_modality=False, hidden_size=37)

    def test_config(self):
        self.config_tester.run_common_tests()


class CLIPTextModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CLIPTextModel, CLIPTextModelWithProjection)

    def setUp(self):
        self.model_tester = TextTester(self)
        self.config_tester = ConfigTester(self, config_class=CLIPTextConfig, hidden_size=37)

    def test_config(self):
        self.config_tester.run_common_tests()


class CLIPModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CLIPModel,)
    _is_composite = True

    def setUp(self):
        self.model_tester = CLIPTester(self)
        common = {"projection_dim": 64}
        self.config_tester = ConfigTester(self, config_class=CLIPConfig, has_text_modality=False, **common)

    def test_config(self):
        self.config_tester.run_common_tests()


class CLIPForImageClassificationTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CLIPForImageClassification,)
    _is_composite = True
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = ClassificationTester(self)
