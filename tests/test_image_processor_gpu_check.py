"""The device path on the CPU: benchmarks/gpu_check.sh runs end to end with `--device cpu --small`, and the
approximate tensor resize (`resize_and_crop_tensor`, what runs on a GPU) stays close to the exact pixels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchclip.embed import embed_image_files
from torchclip.image_files import resize_and_crop_tensor
from torchclip.image_processor import CLIPImageProcessor

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "tests" / "data" / "images").glob("*.png"))


def test_gpu_check_runs_on_the_cpu():
    pytest.importorskip("transformers")
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--small"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| tiny on cpu |" in out and "parity: PASS" in out
    for row in ("tiny images | float32", "tiny texts | bfloat16", "exact CPU processor", "end to end, exact pixels"):
        assert row in out, row


@pytest.mark.parametrize("config", [{}, {"size": 200, "crop_size": {"height": 180, "width": 232}}])
def test_tensor_resize_is_close_to_the_exact_pixels(config):
    """torch's antialiased bicubic vs Pillow's fixed-point filter, in 8-bit levels, on the real photos:
    close (mean well under a level) but not equal, which is why the device path is the approximate one."""
    processor = CLIPImageProcessor(**config)
    images = [Image.open(p).convert("RGB") for p in PHOTOS]
    exact = processor(images, return_tensors="pt", do_rescale=False, do_normalize=False).pixel_values
    tensors = [torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1) for image in images]
    approximate = torch.stack([resize_and_crop_tensor(t, processor) for t in tensors])
    assert approximate.shape == exact.shape
    levels = (approximate - exact).abs()
    assert levels.mean() < 0.5 and levels.max() <= 8
    assert levels.max() >= 1  # a different filter: if this ever became exact, the docs should say so


def test_fast_decode_without_a_gpu_runs_the_cpu_path(tmp_path):
    """`fast_jpeg_decode` asks for device decoding only on CUDA; on the CPU the DataLoader path gives exactly
    what the processor itself gives."""
    from torchclip.config import CLIPConfig
    from torchclip.modeling import CLIPModel

    config = CLIPConfig(
        projection_dim=16,
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    paths = []
    for index, photo in enumerate(PHOTOS[:3]):
        paths.append(tmp_path / f"{index}.jpg")
        Image.open(photo).convert("RGB").save(paths[-1], quality=90)
    fast = CLIPImageProcessor(fast_jpeg_decode=True)
    (batch,) = embed_image_files(model, fast, paths, batch_size=8, num_workers=0)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(
            model.get_image_features(fast(paths, return_tensors="pt").pixel_values), dim=-1
        )
    assert batch.indices == [0, 1, 2] and torch.equal(batch.features, expected)


def test_device_decoding_path_on_the_cpu(tmp_path):
    """The nvJPEG path's logic with torchvision's CPU decoder: JPEGs batch-decoded, a PNG through Pillow, a
    corrupt file reported (not fatal), EXIF orientation applied; pixels close to the exact path."""
    pytest.importorskip("torchvision")
    from torchclip.image_files import FileBytes, _decode_on_device

    photo = Image.open(PHOTOS[3]).convert("RGB")  # coffee, 600 x 400
    photo.save(tmp_path / "a.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    photo.save(tmp_path / "c.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [tmp_path / n for n in ("a.jpg", "bad.jpg", "rotated.jpg", "c.png")]
    processor = CLIPImageProcessor()
    items = [FileBytes(paths)[i] for i in range(len(paths))]
    indices, pixels, failures = _decode_on_device(items, torch.device("cpu"), processor)
    assert indices == [0, 2, 3] and [index for index, _ in failures] == [1]
    exact = processor([paths[i] for i in indices], return_tensors="pt", do_rescale=False, do_normalize=False)
    levels = (pixels - exact.pixel_values).abs()
    assert levels.mean() < 2  # JPEG decoders and the resize filter differ a little, not the image
