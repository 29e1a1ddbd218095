"""transformers' ImageProcessingTestMixin (from the pinned sdist, unchanged) on torchclip's CLIPImageProcessor.

The tester is this project's: transformers' base tester finds the classes under test from the test file's
folder name (`tests/models/clip/`) in its own registry; this one names the target library's
CLIPImageProcessor (its Pillow backend only: torchclip has no torchvision backend) and the settings of
transformers' own CLIP image-processing test (shortest edge 20, crop 18).
"""

from __future__ import annotations

import unittest

from targets import TARGET, target_class
from transformers_tests.test_image_processing_common import ImageProcessingTester, ImageProcessingTestMixin

CLIPImageProcessor = target_class("CLIPImageProcessor")
if TARGET == "transformers":
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as CLIPImageProcessor


class CLIPImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent):
        super().__init__(parent, batch_size=7, num_channels=3, min_resolution=30, max_resolution=400)
        self.settings = {
            "do_resize": True, "size": {"shortest_edge": 20}, "do_center_crop": True,
            "crop_size": {"height": 18, "width": 18}, "do_normalize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": True,
        }  # fmt: skip

    def _get_image_processing_classes(self):
        return {"pil": CLIPImageProcessor}

    def prepare_image_processor_dict(self):
        return dict(self.settings)

    def expected_output_image_shape(self, images):
        return self.num_channels, 18, 18


class CLIPImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = CLIPImageProcessingTester
