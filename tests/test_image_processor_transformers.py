"""pipeline="transformers": parity with transformers.CLIPImageProcessor computed in the same run, and
config files that transformers writes and reads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps
from test_image_processor import CONFIGS, DATA, FIXTURES, TOL, golden, max_diff

from torchclip import CLIPImageProcessor

transformers = pytest.importorskip("transformers")

IMAGES = sorted(DATA.glob("images/*.png")) + sorted(p for p in FIXTURES.iterdir() if p.is_file())


def reference(**kwargs):
    with warnings.catch_warnings():  # "falls back to CLIPImageProcessorPil" when torchvision is absent
        warnings.simplefilter("ignore")
        return transformers.CLIPImageProcessor(**kwargs)


@pytest.mark.parametrize("config", ["224", "hw192x256", "s200_crop180x232"])
@pytest.mark.parametrize("path", IMAGES, ids=[p.name for p in IMAGES])
def test_parity_with_transformers(path, config):
    kwargs = CONFIGS[config]
    if isinstance(kwargs.get("size"), int):
        kwargs = {**kwargs, "size": {"shortest_edge": kwargs["size"]}}
    image = Image.open(path)
    # torchclip applies EXIF orientation in both pipelines; transformers only for files it opens itself
    expected = reference(**kwargs)(ImageOps.exif_transpose(image), return_tensors="np").pixel_values
    out = CLIPImageProcessor(pipeline="transformers", **kwargs)(image, return_tensors="np").pixel_values
    assert out.shape == expected.shape
    assert max_diff(out, expected) <= TOL


def test_uint8_arrays_match_transformers():
    rgb = np.array(Image.open(FIXTURES / "rgb.png"))
    grey = np.array(Image.open(FIXTURES / "l.png"))
    for array in (rgb, rgb.transpose(2, 0, 1).copy(), grey[:, :, None]):
        expected = reference()(array, return_tensors="np").pixel_values
        out = CLIPImageProcessor(pipeline="transformers")(array, return_tensors="np").pixel_values
        assert max_diff(out, expected) <= TOL


def test_the_two_pipelines_differ_where_documented():
    # 57x41 -> 311x224: the crop offset is 43.5, round() gives 44 (original), floor gives 43 (transformers)
    rgb = Image.open(FIXTURES / "rgb.png")
    transformers_out = CLIPImageProcessor(pipeline="transformers")(rgb, return_tensors="np").pixel_values[0]
    assert max_diff(transformers_out, golden("rgb")) > 0.1
    assert max_diff(transformers_out[:, :, 1:], golden("rgb")[:, :, :-1]) <= TOL  # one pixel to the left
    # transparency: composited onto white by transformers, dropped by the original
    rgba = Image.open(FIXTURES / "rgba.png")
    white = CLIPImageProcessor(pipeline="transformers")(rgba, return_tensors="np").pixel_values[0]
    assert max_diff(white, golden("rgba")) > 1.0


def test_transformers_reads_our_config_and_we_read_theirs(tmp_path):
    ours = CLIPImageProcessor(size=200, crop_size={"height": 180, "width": 232}, image_mean=[0.5, 0.5, 0.5])
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.CLIPImageProcessor.from_pretrained(tmp_path / "ours")
    assert theirs.size["shortest_edge"] == 200 and theirs.crop_size["width"] == 232
    assert list(theirs.image_mean) == [0.5, 0.5, 0.5] and theirs.resample == 3

    reference(size={"shortest_edge": 336}, crop_size=336).save_pretrained(tmp_path / "theirs")
    loaded = CLIPImageProcessor.from_pretrained(tmp_path / "theirs")
    assert loaded.size == {"shortest_edge": 336} and loaded.crop_size == {"height": 336, "width": 336}
    photo = Image.open(DATA / "images" / "astronaut.png")
    assert max_diff(loaded(photo, return_tensors="np").pixel_values[0], golden("photo_astronaut", "336")) <= TOL
