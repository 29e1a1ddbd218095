"""The crop-aware resize (`_resize_and_crop`, torchclip.resample's vectorised Pillow arithmetic) is
bit-identical to Pillow's `resize(...).crop(...)`: checked on many random sizes, both pass orders, every
8-bit mode and the resampling filters. So is its torch form for tensors on any device
(`resize_and_crop_tensor`, the GPU path's resize), checked here on the CPU."""

from __future__ import annotations

import subprocess
import sys

import numba
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from torchclip.image_processor import _crop_box, _resize_and_crop, _resized_size, _vectorised_matches_pillow
from torchclip.resample import _compiled, horizontal_first, resize_and_crop_tensor

MODES = ("RGB", "L", "RGBA", "LA", "CMYK")
FILTERS = [
    Image.Resampling.BICUBIC,
    Image.Resampling.BILINEAR,
    Image.Resampling.LANCZOS,
    Image.Resampling.BOX,
    Image.Resampling.HAMMING,
]


def random_image(rng: np.random.Generator, size: tuple[int, int], mode: str) -> Image.Image:
    bands = len(Image.new(mode, (1, 1)).getbands())
    pixels = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    if mode in ("RGBA", "LA"):  # fully transparent and opaque areas too, where premultiplying matters most
        pixels[..., -1] = np.where(rng.random(pixels.shape[:2]) < 0.3, 0, pixels[..., -1])
    return Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode)


def random_resize(rng: np.random.Generator, trial: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...]]:
    """(size, new_size, crop box) up to 300 pixels: up- or downscaling, one axis only on 2 trials in 5, and
    any crop inside the result, down to one pixel."""
    size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
    new_size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
    if trial % 5 == 0:
        new_size = (size[0], new_size[1])  # only the height changes
    elif trial % 5 == 1:
        new_size = (new_size[0], size[1])  # only the width changes
    left, right = sorted(int(v) for v in rng.choice(new_size[0] + 1, 2, replace=new_size[0] == 0))
    top, bottom = sorted(int(v) for v in rng.choice(new_size[1] + 1, 2, replace=new_size[1] == 0))
    return size, new_size, (left, top, max(right, left + 1), max(bottom, top + 1))


def reference(image: Image.Image, new_size, box, resample) -> bytes:
    return image.resize(new_size, resample).crop(box).tobytes()


def test_the_vectorised_resize_is_used_with_this_pillow():
    # if this fails, _resize_and_crop falls back to Pillow's resize (still correct, just slower)
    assert _vectorised_matches_pillow()


def test_clip_shapes_on_many_photo_sizes():
    """Shortest edge 224 or 336 and a centre crop, as the processor calls it, on 300 random photo sizes."""
    rng = np.random.default_rng(0)
    orders = set()
    for trial in range(300):
        size = (int(rng.integers(150, 1400)), int(rng.integers(150, 1400)))
        image = random_image(rng, size, MODES[trial % len(MODES)])
        target = 224 if trial % 2 else 336
        new_size = _resized_size(*size, {"shortest_edge": target})
        box = _crop_box(*new_size, {"height": target, "width": target}, "openai")
        out = _resize_and_crop(image, new_size, box, Image.Resampling.BICUBIC)
        assert out.mode == image.mode and out.size == (target, target)
        assert out.tobytes() == reference(image, new_size, box, Image.Resampling.BICUBIC), (size, image.mode)
        orders.add(horizontal_first(size, new_size))
    assert orders == {True, False}  # both pass orders were exercised


@pytest.mark.parametrize("resample", FILTERS)
def test_arbitrary_sizes_crops_and_filters(resample):
    """Up- and downscaling, one axis or both, extreme aspect ratios, off-centre and one-pixel crops."""
    rng = np.random.default_rng(int(resample))
    for trial in range(80):
        size, new_size, box = random_resize(rng, trial)
        image = random_image(rng, size, MODES[trial % len(MODES)])
        out = _resize_and_crop(image, new_size, box, resample)
        assert out.tobytes() == reference(image, new_size, box, resample), (size, new_size, box, image.mode)


def test_crop_larger_than_the_image_pads_with_zeros_like_pillow():
    image = random_image(np.random.default_rng(1), (57, 41), "RGBA")
    new_size, box = (60, 43), (-5, -3, 65, 47)
    assert _resize_and_crop(image, new_size, box, Image.Resampling.BICUBIC).tobytes() == reference(
        image, new_size, box, Image.Resampling.BICUBIC
    )


def test_a_photo_pillow_stores_in_several_blocks():
    """An image made while Pillow's allocator chains 16 MB blocks (the user's own, decoded before torchclip set
    one block per image) has no in-place view: its copied pixels give the same result."""
    Image.core.set_use_block_allocator(0)
    try:
        image = random_image(np.random.default_rng(2), (3000, 2000), "RGB")
    finally:
        Image.core.set_use_block_allocator(1)
    with pytest.raises(ValueError, match="not contiguous"):
        pa.array(image)
    new_size = _resized_size(*image.size, {"shortest_edge": 224})
    box = _crop_box(*new_size, {"height": 224, "width": 224}, "openai")
    assert _resize_and_crop(image, new_size, box, Image.Resampling.BICUBIC).tobytes() == reference(
        image, new_size, box, Image.Resampling.BICUBIC
    )


def test_a_pillow_without_arrow_export(monkeypatch):
    """Pillow before 11.2 has no Arrow export (pyarrow then raises TypeError): the pixels are copied through
    NumPy instead, with the same result."""
    monkeypatch.delattr(Image.Image, "__arrow_c_array__")
    image = random_image(np.random.default_rng(4), (640, 427), "RGB")
    with pytest.raises(TypeError):
        pa.array(image)
    new_size = _resized_size(*image.size, {"shortest_edge": 224})
    box = _crop_box(*new_size, {"height": 224, "width": 224}, "openai")
    assert _resize_and_crop(image, new_size, box, Image.Resampling.BICUBIC).tobytes() == reference(
        image, new_size, box, Image.Resampling.BICUBIC
    )


def test_large_images_made_once_torchclip_is_imported_are_viewed_in_place():
    image = random_image(np.random.default_rng(3), (3000, 2000), "RGB")
    assert len(pa.array(image)) == 3000 * 2000  # viewed in place, no ValueError


def test_kernels_compile_where_numba_has_nowhere_to_cache_them():
    """numba refuses cache=True for a source with no writable cache folder (a read-only install and home);
    torchclip.resample then compiles without one. A function defined in exec'd code has no cache folder."""
    namespace: dict = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)  # a function with no source file
    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(namespace["twice"])
    assert _compiled()(namespace["twice"])(21) == 42


def test_warm_up_loads_every_kernel_an_image_needs():
    """After `warm_up()` (what `torchclip serve` calls before taking requests) the first images compile nothing
    more: photos of both pass orders, greyscale, RGBA, JPEG bytes and a one-axis resize, as a batch and as a list, find
    their kernels ready. In a fresh process, where nothing else has compiled them."""
    code = """if True:
        import io
        import numpy as np
        from PIL import Image
        import torchclip.resample as r
        from torchclip.image_processor import CLIPImageProcessor, warm_up
        kernels = (r.coefficients, r._horizontal, r._vertical, r._lookup)
        warm_up()
        before = [len(k.signatures) for k in kernels]
        rng = np.random.default_rng(0)
        photos = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in
                  ((640, 480), (300, 900), (224, 500))]
        photos += [photos[0].convert("L"), photos[1].convert("RGBA")]
        for photo in photos[:3]:  # JPEG bytes: decoded to RGBX arrays, not PIL images
            buffer = io.BytesIO()
            photo.save(buffer, "JPEG")
            photos.append(buffer.getvalue())
        CLIPImageProcessor()(photos, return_tensors="pt")
        CLIPImageProcessor()(photos, return_tensors=None)
        print(before, [len(k.signatures) for k in kernels])
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = result.stdout.strip().split("] [")
    assert before.strip("[") == after.strip("]") and "0" not in before, result.stdout


# ---------------------------------------------------------------------- the same arithmetic on tensors


def as_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 [C, H, W] of an image's bands."""
    return torch.from_numpy(np.asarray(image).reshape(image.size[1], image.size[0], -1).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("resample", FILTERS)
def test_tensor_resize_is_pillows_on_arbitrary_sizes_crops_and_filters(resample):
    """`resize_and_crop_tensor` (what runs on a GPU) against Pillow itself, on RGB and greyscale: up- and
    downscaling, one axis or both, both pass orders, off-centre and one-pixel crops."""
    rng = np.random.default_rng(100 + int(resample))
    orders = set()
    for trial in range(60):
        size, new_size, box = random_resize(rng, trial)
        image = random_image(rng, size, ("RGB", "L")[trial % 2])
        out = resize_and_crop_tensor(as_tensor(image), new_size, box, resample)
        assert out.dtype == torch.uint8
        assert torch.equal(out, as_tensor(image.resize(new_size, resample).crop(box))), (size, new_size, box)
        orders.add(horizontal_first(size, new_size))
    assert orders == {True, False}


def test_tensor_resize_of_a_batch_in_slices_is_each_images_own(monkeypatch):
    """A batch of same-sized photos [N, 3, H, W], with the gathered windows cut into many slices (a small
    memory bound), gives each photo's own Pillow result, in both pass orders."""
    monkeypatch.setattr("torchclip.resample._WINDOW_ELEMENTS", 5000)  # one row per slice
    rng = np.random.default_rng(7)
    for size, target in (((640, 427), 224), ((300, 900), 224)):
        images = [random_image(rng, size, "RGB") for _ in range(3)]
        new_size = _resized_size(*size, {"shortest_edge": target})
        box = _crop_box(*new_size, {"height": target, "width": target}, "openai")
        batch = torch.stack([as_tensor(image) for image in images])
        out = resize_and_crop_tensor(batch, new_size, box, Image.Resampling.BICUBIC)
        for image, got in zip(images, out, strict=True):
            assert torch.equal(got, as_tensor(image.resize(new_size, Image.Resampling.BICUBIC).crop(box)))


def test_tensor_resize_refuses_a_crop_outside_the_image():
    with pytest.raises(ValueError, match=r"crop box \(0, 0, 11, 10\) is not inside the resized image \(10, 10\)"):
        resize_and_crop_tensor(torch.zeros(3, 20, 20, dtype=torch.uint8), (10, 10), (0, 0, 11, 10), 3)
