"""CLIPImageProcessor: pixel parity with OpenAI's original transform (golden fixtures made by
scripts/make_image_fixtures.py with OpenCLIP), with transformers (same run), every input type, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchclip import CLIPFeatureExtractor, CLIPImageProcessor
from torchclip.batch import BatchFeature
from torchclip.image_processor import _simplejpeg_matches_pillow

DATA = Path(__file__).parent / "data"
FIXTURES = DATA / "image_fixtures"
GOLDEN = FIXTURES / "golden"
TABLE = np.load(GOLDEN / "table.npy")  # [3, 256]: the reference's ToTensor + Normalize of each 8-bit value
TOL = 1e-5

# The processor settings that correspond to each reference transform in make_image_fixtures.py.
CONFIGS = {
    "224": {},
    "336": {"size": 336, "crop_size": 336},
    "hw192x256": {"size": {"height": 192, "width": 256}, "crop_size": {"height": 192, "width": 256}},
    "s200_crop180x232": {"size": 200, "crop_size": {"height": 180, "width": 232}},
}
GOLDEN_CASES = sorted(path.stem.split("__") for path in GOLDEN.glob("*.png"))


def source_path(name: str) -> Path:
    if name.startswith("photo_"):
        return DATA / "images" / f"{name.removeprefix('photo_')}.png"
    (path,) = FIXTURES.glob(f"{name}.*")
    return path


def golden(name: str, config: str = "224") -> np.ndarray:
    """The reference's float32 output [3, H, W], rebuilt bit-exactly from the stored 8-bit indices."""
    indices = np.asarray(Image.open(GOLDEN / f"{name}__{config}.png"))
    return np.stack([TABLE[c][indices[..., c]] for c in range(3)])


def golden_pixels(name: str, config: str = "224") -> np.ndarray:
    """The reference's 8-bit pixels before ToTensor/Normalize, [3, H, W]."""
    return np.asarray(Image.open(GOLDEN / f"{name}__{config}.png")).transpose(2, 0, 1)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def test_golden_cases_cover_every_mode_and_config():
    names = {name for name, _ in GOLDEN_CASES}
    modes = {Image.open(source_path(name)).mode for name in names}
    assert {"RGB", "RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1"} <= modes
    assert {config for _, config in GOLDEN_CASES} == set(CONFIGS)
    assert len(GOLDEN_CASES) >= 50


@pytest.mark.parametrize(("name", "config"), GOLDEN_CASES, ids=["__".join(case) for case in GOLDEN_CASES])
def test_parity_with_original_pipeline(name, config):
    processor = CLIPImageProcessor(**CONFIGS[config])
    out = processor(Image.open(source_path(name)), return_tensors="pt").pixel_values
    expected = golden(name, config)
    assert out.dtype == torch.float32 and out.shape == (1, *expected.shape)
    assert max_diff(out[0], expected) <= TOL


def test_batch_of_photos_and_per_call_overrides():
    names = ["photo_astronaut", "photo_chelsea", "photo_coffee"]
    processor = CLIPImageProcessor()
    images = [Image.open(source_path(name)) for name in names]
    out = processor(images, return_tensors="pt", size=336, crop_size=336)
    assert isinstance(out, BatchFeature) and out.pixel_values.shape == (3, 3, 336, 336)
    assert max_diff(out.pixel_values, np.stack([golden(n, "336") for n in names])) <= TOL
    # the override was for one call only
    assert processor(images[0], return_tensors="pt").pixel_values.shape == (1, 3, 224, 224)


def rgb_array() -> np.ndarray:
    return np.array(Image.open(source_path("rgb")))


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("str path", lambda: str(source_path("rgb"))),
        ("pathlib.Path", lambda: source_path("rgb")),
        ("bytes", lambda: source_path("rgb").read_bytes()),
        ("bytearray", lambda: bytearray(source_path("rgb").read_bytes())),
        ("numpy HWC uint8", rgb_array),
        ("numpy CHW uint8", lambda: rgb_array().transpose(2, 0, 1).copy()),
        ("numpy HWC float32 [0,1]", lambda: rgb_array().astype(np.float32) / 255),
        ("numpy CHW float64 [0,1]", lambda: rgb_array().transpose(2, 0, 1) / 255.0),
        ("torch CHW uint8", lambda: torch.from_numpy(rgb_array()).permute(2, 0, 1)),
        ("torch CHW float", lambda: torch.from_numpy(rgb_array()).permute(2, 0, 1).float() / 255),
        ("torch HWC uint8", lambda: torch.from_numpy(rgb_array())),
        ("numpy int64 HWC", lambda: rgb_array().astype(np.int64)),
    ],
)
def test_input_types_match_the_pil_image(kind, make):
    out = CLIPImageProcessor()(make(), return_tensors="np").pixel_values
    assert isinstance(out, np.ndarray) and out.shape == (1, 3, 224, 224), kind
    assert max_diff(out[0], golden("rgb")) <= TOL, kind


def test_greyscale_and_rgba_arrays():
    grey = np.asarray(Image.open(source_path("l")))
    processor = CLIPImageProcessor()
    for array in (grey, grey[:, :, None], grey[None]):
        assert max_diff(processor(array, return_tensors="np").pixel_values[0], golden("l")) <= TOL
    # a 4-channel array is RGBA; like the original's convert("RGB"), alpha is dropped
    rgba = np.asarray(Image.open(source_path("rgba")))
    assert max_diff(processor(rgba, return_tensors="np").pixel_values[0], golden("rgba")) <= TOL


def test_mixed_list_and_4d_batch():
    processor = CLIPImageProcessor()
    mixed = [Image.open(source_path("l")), str(source_path("cmyk")), source_path("rgba").read_bytes(), rgb_array()]
    out = processor(mixed, return_tensors="pt").pixel_values
    expected = np.stack([golden(n) for n in ("l", "cmyk", "rgba", "rgb")])
    assert out.shape == (4, 3, 224, 224) and max_diff(out, expected) <= TOL
    batch = np.stack([rgb_array()] * 2)
    assert max_diff(processor(batch, return_tensors="np").pixel_values, np.stack([golden("rgb")] * 2)) <= TOL


def test_exif_orientation_is_applied_for_every_input_kind():
    path = source_path("exif_rotated")
    stored = Image.open(path)
    assert stored.size == (45, 31) and stored.getexif()[0x0112] == 6
    processor = CLIPImageProcessor()
    for item in (path, str(path), path.read_bytes(), Image.open(path)):
        assert max_diff(processor(item, return_tensors="np").pixel_values[0], golden("exif_rotated")) <= TOL
    # without the rotation the pixels are clearly different: the golden really is the upright image
    sideways = processor(np.asarray(stored), return_tensors="np").pixel_values[0]
    assert max_diff(sideways, golden("exif_rotated")) > 0.5


def test_feature_extractor_is_the_same_processor():
    extractor = CLIPFeatureExtractor()
    assert isinstance(extractor, CLIPImageProcessor)
    out = extractor(Image.open(source_path("photo_chelsea")), return_tensors="pt")
    assert max_diff(out["pixel_values"][0], golden("photo_chelsea")) <= TOL


# ---------------------------------------------------------------- the do_* switches


def test_without_rescale_and_normalize_the_pixels_are_the_references_8bit_values():
    processor = CLIPImageProcessor(do_rescale=False, do_normalize=False)
    for name in ("photo_coffee", "rgb", "p_transparency"):
        out = processor(Image.open(source_path(name)), return_tensors="np").pixel_values[0]
        assert np.array_equal(out, golden_pixels(name).astype(np.float32)), name


def test_uint8_pixels_then_rescale_and_normalize_equal_a_call_exactly():
    """The split the embedding workers use: 8-bit pixels in a worker, the multiply-add where the model runs."""
    images = [Image.open(source_path(name)) for name in ("photo_coffee", "rgb", "p_transparency")]
    processor = CLIPImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=0.25)
    pixels = processor.uint8_pixels(images)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 224, 224) and pixels.is_contiguous()
    for pixels_in_8_bits, name in zip(pixels, ("photo_coffee", "rgb", "p_transparency")):
        assert np.array_equal(pixels_in_8_bits.numpy(), golden_pixels(name)), name
    expected = processor(images, return_tensors="pt").pixel_values
    assert torch.equal(processor.rescale_and_normalize(pixels), expected)
    assert torch.equal(processor.rescale_and_normalize(pixels.float()), expected)  # float holding 8-bit values
    with pytest.raises(ValueError, match=r"image #1: is not an image Pillow can read"):
        processor.uint8_pixels([images[0], b"not an image"])


def test_every_8bit_level_normalises_to_the_multiply_add_floats():
    """A call looks each pixel up in a 256-entry table per channel; every level of every channel, across
    several batches and settings, must be the float that the multiply-add on the pixels itself gives."""
    rng = np.random.default_rng(7)
    arrays = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    arrays[0][:16, :16] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)  # every level in all three channels
    for settings in ({}, {"image_mean": [0.5, 0.4, 0.3], "image_std": 0.25}, {"do_normalize": False}):
        processor = CLIPImageProcessor(do_resize=False, do_center_crop=False, **settings)
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        expected = processor.rescale_and_normalize(pixels.float())  # float pixels: the multiply-add itself
        assert torch.equal(processor.rescale_and_normalize(pixels), expected), settings  # uint8: the table
        assert torch.equal(processor(arrays, return_tensors="pt").pixel_values, expected), settings
        single = processor(arrays[1], return_tensors=None).pixel_values[0]
        assert np.array_equal(single, expected[1].numpy()), settings


def test_rescale_and_custom_normalization():
    image = Image.open(source_path("photo_coffee"))
    pixels = golden_pixels("photo_coffee").astype(np.float64)
    rescaled = CLIPImageProcessor(do_normalize=False)(image, return_tensors="np").pixel_values[0]
    assert max_diff(rescaled, pixels / 255) <= TOL
    custom = CLIPImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=0.25, rescale_factor=1 / 127.5)
    out = custom(image, return_tensors="np").pixel_values[0]
    expected = (pixels / 127.5 - np.array([0.5, 0.4, 0.3])[:, None, None]) / 0.25
    assert max_diff(out, expected) <= TOL


def test_resample_filter_is_used():
    image = Image.open(source_path("rgb"))
    out = CLIPImageProcessor(resample=Image.Resampling.NEAREST, do_center_crop=False, do_normalize=False)(
        image, return_tensors="np", do_rescale=False
    )
    # 57x41 -> shortest edge 224: (int(224 * 57 / 41), 224) = (311, 224), Pillow's nearest filter
    expected = np.asarray(image.resize((311, 224), Image.Resampling.NEAREST)).transpose(2, 0, 1)
    assert np.array_equal(out.pixel_values[0], expected.astype(np.float32))


def test_no_resize_crops_the_original_pixels():
    image = Image.open(source_path("photo_coffee"))  # 600 x 400
    out = CLIPImageProcessor(do_resize=False, do_rescale=False, do_normalize=False)(image, return_tensors="np")
    # torchvision offsets: round((400 - 224) / 2) = 88, round((600 - 224) / 2) = 188
    expected = np.asarray(image)[88 : 88 + 224, 188 : 188 + 224].transpose(2, 0, 1)
    assert np.array_equal(out.pixel_values[0], expected.astype(np.float32))


def test_without_crop_sizes_can_differ():
    processor = CLIPImageProcessor(do_center_crop=False)
    images = [Image.open(source_path("photo_coffee")), Image.open(source_path("photo_astronaut"))]
    out = processor(images)
    assert [a.shape for a in out.pixel_values] == [(3, 224, 336), (3, 224, 224)]
    with pytest.raises(ValueError, match="different sizes after preprocessing"):
        processor(images, return_tensors="pt")


def test_do_convert_rgb_false():
    processor = CLIPImageProcessor(do_convert_rgb=False)
    rgb = processor(Image.open(source_path("rgb")), return_tensors="np").pixel_values[0]
    assert max_diff(rgb, golden("rgb")) <= TOL
    with pytest.raises(ValueError, match=r"image #1: do_convert_rgb=False needs RGB images, got mode 'L'"):
        processor([Image.open(source_path("rgb")), Image.open(source_path("l"))])


def test_settings_are_validated():
    with pytest.raises(ValueError, match="pipeline must be one of"):
        CLIPImageProcessor(pipeline="tensorflow")
    with pytest.raises(ValueError, match="size must be an int or a dict"):
        CLIPImageProcessor(size={"longest_edge": 224})
    with pytest.raises(ValueError, match="crop_size must be an int or a dict"):
        CLIPImageProcessor(crop_size={"shortest_edge": 224})
    with pytest.raises(ValueError, match="image_mean must be one float or three"):
        CLIPImageProcessor(image_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="resample must be"):
        CLIPImageProcessor(resample=17)
    with pytest.raises(TypeError, match=r"unknown preprocessing settings \['do_flip'\]"):
        CLIPImageProcessor()(rgb_array(), do_flip=True)
    with pytest.raises(ValueError, match="return_tensors must be"):
        CLIPImageProcessor()(rgb_array(), return_tensors="tf")


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match=rf"image #1 \('{missing}'\): no such file"):
        CLIPImageProcessor()([rgb_array(), missing])


def test_zero_byte_file_and_empty_bytes(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"image #0 \('{empty}'\): the file is empty \(0 bytes\)"):
        CLIPImageProcessor()(str(empty))
    with pytest.raises(ValueError, match=r"image #2: the bytes are empty"):
        CLIPImageProcessor()([rgb_array(), rgb_array(), b""])


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.open(source_path("photo_coffee")).save(buffer, "JPEG", quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match=r"image #0 \('.*truncated.jpg'\): could not be decoded: .*truncated"):
        CLIPImageProcessor()(truncated)


# ---------------------------------------------------------------- JPEGs decoded straight into arrays


def test_jpeg_files_decode_straight_into_arrays_with_the_references_pixels():
    """An RGB JPEG given as a file or bytes is decoded by simplejpeg into an array (when its libjpeg-turbo
    matches Pillow's, as here), oriented by its EXIF tag in NumPy: the golden fixtures (OpenCLIP's transform
    of the PIL image) still hold."""
    from torchclip.image_processor import _open

    assert _simplejpeg_matches_pillow()
    path = source_path("exif_rotated")
    assert isinstance(_open(path, CLIPImageProcessor()._settings()), np.ndarray)  # the array route is taken
    configs = [config for name, config in GOLDEN_CASES if name == "exif_rotated"]
    assert len(configs) == 2
    for config in configs:
        processor = CLIPImageProcessor(**CONFIGS[config])
        for source in (path, path.read_bytes()):
            out = processor(source, return_tensors="np").pixel_values[0]
            assert max_diff(out, golden("exif_rotated", config)) <= TOL, config


def test_jpegs_of_every_kind_decode_as_pillow_decodes_them(tmp_path):
    """Chroma subsampling 4:4:4, 4:2:2 and 4:2:0, baseline and progressive, odd sizes, a restart interval,
    and all eight EXIF orientations: the array route gives the bytes of Pillow's decode + exif_transpose
    (the same processor given the opened PIL image), as a batch and one by one."""
    rng = np.random.default_rng(5)
    photo = Image.open(source_path("photo_chelsea")).convert("RGB")
    paths = []
    for index in range(16):
        width, height = int(rng.integers(230, 700)), int(rng.integers(230, 700))
        image = photo.resize((width, height), Image.Resampling.BILINEAR)
        exif = Image.Exif()
        exif[0x0112] = index % 8 + 1
        options = [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True}][index % 4]
        paths.append(tmp_path / f"{index}.jpg")
        image.save(paths[-1], quality=int(rng.integers(60, 98)), exif=exif, restart_marker_rows=index % 3, **options)
    for config in ({}, {"size": 336, "crop_size": 336}, {"pipeline": "transformers"}):
        processor = CLIPImageProcessor(**config)
        expected = processor([Image.open(path) for path in paths], return_tensors="pt").pixel_values
        assert torch.equal(processor(paths, return_tensors="pt").pixel_values, expected), config
        one_by_one = processor(paths, return_tensors=None).pixel_values
        assert all(np.array_equal(a, b) for a, b in zip(one_by_one, expected.numpy(), strict=True)), config


def test_without_simplejpeg_pillow_decodes(tmp_path, monkeypatch):
    """simplejpeg is optional at run time (torchclip run from src/ on a machine without it): Pillow decodes."""
    import sys

    from torchclip import image_processor

    path = tmp_path / "a.jpg"
    Image.open(source_path("photo_coffee")).save(path, quality=90)
    expected = CLIPImageProcessor()(path, return_tensors="pt").pixel_values
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import simplejpeg now raises ImportError
    image_processor._simplejpeg_matches_pillow.cache_clear()
    try:
        assert not image_processor._simplejpeg_matches_pillow()
        assert torch.equal(CLIPImageProcessor()(path, return_tensors="pt").pixel_values, expected)
    finally:
        monkeypatch.undo()
        image_processor._simplejpeg_matches_pillow.cache_clear()


def test_bytes_that_are_no_image(tmp_path):
    with pytest.raises(ValueError, match=r"image #1: is not an image Pillow can read"):
        CLIPImageProcessor()([rgb_array(), b"definitely not an image"])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"image #0 \('.*notes.txt'\): is not an image Pillow can read"):
        CLIPImageProcessor()(text)


def test_decompression_bomb_is_refused_and_the_limit_stays_on(monkeypatch):
    # 57 x 41 = 2337 pixels, more than twice a limit of 1000: Pillow's bomb error, which must surface
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"image #0 \('.*rgb.png'\): refused as a possible decompression bomb"):
        CLIPImageProcessor()(source_path("rgb"))
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_extreme_aspect_ratio_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    # 301 x 7 resized to a shortest edge of 224 would be 9632 x 224 = 2.2 M pixels
    with pytest.raises(ValueError, match=r"image #0: resizing 301x7 to 9632x224 exceeds Pillow's MAX_IMAGE_PIXELS"):
        CLIPImageProcessor()(Image.open(source_path("wide")))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(10, np.uint8), r"array of shape \(10,\) has rank 1"),
        (np.zeros((1, 1, 4, 4, 3), np.uint8), r"array of shape \(1, 1, 4, 4, 3\) has rank 5"),
        (np.zeros((8, 9, 2), np.uint8), r"array of shape \(8, 9, 2\) has no channel axis of size 1, 3 or 4"),
        (np.full((8, 9, 3), np.nan, np.float32), "float array contains NaN"),
        (np.full((8, 9, 3), 1.5), r"float array values must lie in \[0, 1\], got \[1.5, 1.5\]"),
        (np.full((8, 9, 3), 300, np.int32), r"integer array values must lie in 0..255"),
        (np.zeros((0, 9, 3), np.uint8), r"array of shape \(0, 9, 3\) is empty"),
        (np.zeros((8, 9, 3), np.complex64), "array dtype complex64 is not supported"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ValueError, match=r"image #1: " + message):
        CLIPImageProcessor()([rgb_array(), array])


def test_unsupported_type():
    with pytest.raises(TypeError, match=r"image #0: unsupported type int"):
        CLIPImageProcessor()(42)


def test_nothing_is_returned_partially_and_all_failures_are_counted():
    with pytest.raises(ValueError, match=r"image #1: is not an image .*\(1 more image\(s\) also failed: \[3\]\)"):
        CLIPImageProcessor()([rgb_array(), b"junk", rgb_array(), b"more junk"])


# ---------------------------------------------------------------- config files


def test_reads_transformers_4x_preprocessor_config(tmp_path):
    config = {
        "crop_size": 336,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 336,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    processor = CLIPFeatureExtractor.from_pretrained(tmp_path)
    assert processor.size == {"shortest_edge": 336} and processor.crop_size == {"height": 336, "width": 336}
    out = processor(Image.open(source_path("photo_astronaut")), return_tensors="np").pixel_values[0]
    assert max_diff(out, golden("photo_astronaut", "336")) <= TOL


def test_processor_config_json_takes_priority(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": 336, "crop_size": 336}))
    nested = {"image_processor": {"size": {"shortest_edge": 200}, "crop_size": {"height": 180, "width": 232}}}
    (tmp_path / "processor_config.json").write_text(json.dumps({**nested, "processor_class": "CLIPProcessor"}))
    processor = CLIPImageProcessor.from_pretrained(tmp_path)
    assert processor.crop_size == {"height": 180, "width": 232}
    out = processor(Image.open(source_path("rgb")), return_tensors="np").pixel_values[0]
    assert max_diff(out, golden("rgb", "s200_crop180x232")) <= TOL


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image processor config"):
        CLIPImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        CLIPImageProcessor.from_pretrained(tmp_path)


def test_save_and_load_round_trip(tmp_path):
    processor = CLIPImageProcessor(size=336, crop_size={"height": 300, "width": 320}, pipeline="transformers")
    processor.save_pretrained(tmp_path / "saved")
    loaded = CLIPImageProcessor.from_pretrained(tmp_path / "saved")
    assert loaded.to_dict() == processor.to_dict()
    assert json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())["size"] == {"shortest_edge": 336}


# ---------------------------------------------------------------- reduced-size JPEG decode


def test_fast_jpeg_decode_is_opt_in_close_and_only_for_files(tmp_path):
    photo = Image.open(source_path("photo_coffee")).resize((1800, 1200), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    photo.save(path, quality=92)
    exact = CLIPImageProcessor()(path, return_tensors="np", do_normalize=False, do_rescale=False).pixel_values
    fast_processor = CLIPImageProcessor(fast_jpeg_decode=True)
    fast = fast_processor(path, return_tensors="np", do_normalize=False, do_rescale=False).pixel_values
    levels = np.abs(fast - exact)
    assert levels.max() > 0  # the reduced decode really happened (1800x1200 -> 900x600, twice 448)
    assert levels.mean() < 3  # ...and stays close to the exact pixels
    # PIL images are used as given, so the flag changes nothing for them
    pil = Image.open(path)
    assert np.array_equal(
        fast_processor(pil, return_tensors="np").pixel_values, CLIPImageProcessor()(pil).pixel_values[0][None]
    )


@pytest.mark.parametrize("name", ["rgba_holes", "la_holes", "p_big", "p_transparency", "bilevel_big", "i16_big"])
def test_resizing_happens_in_the_images_own_mode(name):
    """The goldens are the original transform on the raw image (resize and crop in its mode, RGB last): the
    processor matches them, and converting to RGB first (torchclip's old order) would be clearly off."""
    image = Image.open(source_path(name))
    processor = CLIPImageProcessor()
    assert max_diff(processor(image, return_tensors="np").pixel_values[0], golden(name)) <= TOL
    converted_first = processor(image.convert("RGB"), return_tensors="np").pixel_values[0]
    assert max_diff(converted_first, golden(name)) > 0.1
