"""transformers' ProcessorTesterMixin (from the pinned sdist, unchanged) on torchclip's CLIPProcessor.

The processor is saved from the CLIP vocabulary and preprocessing bundled with torchclip (where transformers'
CLIP test names the hub id of OpenAI's ViT-B/32, which has the same files); `get_component` loads each part
with the target library's own class, where the mixin would ask transformers' Auto classes.
"""

from __future__ import annotations

import unittest

from targets import target_class
from transformers_tests.test_processing_common import ProcessorTesterMixin

from torchclip.hub import bundled_model_path

COMPONENTS = {"tokenizer": "CLIPTokenizer", "image_processor": "CLIPImageProcessor"}


class CLIPProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = target_class("CLIPProcessor")
    model_id = str(bundled_model_path())

    def get_component(self, attribute, use_tiny_ckpt=True, **kwargs):
        return target_class(COMPONENTS[attribute]).from_pretrained(self.tmpdirname, **kwargs)
