"""transformers' TokenizerTesterMixin (from the pinned sdist, unchanged) on torchclip's CLIPTokenizer.

The mixin saves the tokenizer found at `from_pretrained_id` with transformers' AutoTokenizer and loads it
back with `tokenizer_class`; the hub id of transformers' own CLIP test is replaced by the CLIP vocabulary
bundled with torchclip (the same vocabulary, no download).
"""

from __future__ import annotations

import unittest

from targets import target_class
from transformers_tests.test_tokenization_common import TokenizerTesterMixin

from torchclip.hub import bundled_model_path


class CLIPTokenizationTest(TokenizerTesterMixin, unittest.TestCase):
    from_pretrained_id = [str(bundled_model_path())]
    tokenizer_class = target_class("CLIPTokenizer")
    from_pretrained_kwargs = {}
