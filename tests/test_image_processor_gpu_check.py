"""The device path on the CPU: benchmarks/gpu_check.sh runs end to end with `--device cpu --small`; the
tensor resize and crop (`CLIPImageProcessor.resize_and_crop_tensors`, what runs on a GPU) gives the exact
pixels; and the device decoding path, with Pillow standing in for nvJPEG, gives them too."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from torchclip.config import CLIPConfig
from torchclip.embed import embed_image_files
from torchclip.image_files import JpegBytesOrPixels, _decode_on_device
from torchclip.image_processor import CLIPImageProcessor
from torchclip.modeling import CLIPModel

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
    assert "| tiny on cpu |" in out and "parity and exactness: PASS" in out
    rows = ("tiny images | float32", "tiny texts | bfloat16", "exact CPU processor", "bit-exact: PASS", "exact pixels")
    for row in rows:
        assert row in out, row


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"size": 200, "crop_size": {"height": 180, "width": 232}},  # wider than some resized photos: padded
        {"size": 336, "crop_size": 336, "resample": Image.Resampling.LANCZOS},
        {"pipeline": "transformers", "size": 223, "crop_size": 200},  # transformers' crop offsets
        {"size": {"height": 150, "width": 260}, "do_center_crop": False},
    ],
)
def test_tensor_resize_and_crop_gives_the_exact_pixels(config):
    """The device path's resize and crop, from decoded RGB (greyscale replicated), bit for bit the exact CPU
    path's pixels on the real photos: the same integer arithmetic, the same size rules and crop offsets."""
    processor = CLIPImageProcessor(**config)
    images = [Image.open(p) for p in PHOTOS if Image.open(p).mode in ("RGB", "L")]
    exact = processor.uint8_pixels(images)
    for image, expected in zip(images, exact, strict=True):
        got = processor.resize_and_crop_tensors(as_tensor(image)[None])[0]
        assert got.dtype == torch.uint8 and torch.equal(got, expected), image.filename


def test_tensor_resize_refuses_nearest():
    processor = CLIPImageProcessor(resample=Image.Resampling.NEAREST)
    with pytest.raises(ValueError, match="resample=0 .* no tensor resize"):
        processor.resize_and_crop_tensors(torch.zeros(1, 3, 300, 300, dtype=torch.uint8))


def pillow_as_nvjpeg(refuse: bytes = b"") -> object:
    """A stand-in for torchvision's batched decode_jpeg: Pillow's decode with EXIF orientation, RGB, and a
    RuntimeError for the whole call when any file cannot be decoded (or contains `refuse`), as nvJPEG's."""

    def decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        out = []
        for item in data:
            raw = item.numpy().tobytes()
            if refuse and refuse in raw:
                raise RuntimeError("nvjpeg: unsupported")
            try:
                out.append(as_tensor(ImageOps.exif_transpose(Image.open(io.BytesIO(raw)))).to(device))
            except OSError as exc:
                raise RuntimeError(f"decode failed: {exc}") from exc
        return out

    return decode


def test_device_decoding_path_gives_the_exact_pixels_with_an_exact_decoder(tmp_path, monkeypatch):
    """The device path's logic on the CPU with Pillow in nvJPEG's place, so every pixel can be compared: RGB,
    greyscale and EXIF-rotated JPEGs decoded "on the device" and resized there; a PNG, an RGBA PNG and a CMYK
    JPEG decoded exactly by the workers; a JPEG the decoder refuses sent to the exact path; a truncated JPEG,
    a text file and a decompression bomb reported with why. Every pixel equals the exact CPU path's."""
    photo = Image.open(PHOTOS[3])  # coffee, 600 x 400
    photo.save(tmp_path / "a.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(tmp_path / "rotated.jpg", quality=90, exif=exif)
    Image.open(PHOTOS[1]).save(tmp_path / "grey.jpg", quality=90)  # camera, mode L
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    Image.open(PHOTOS[2]).save(tmp_path / "refused.jpg", quality=90, comment=b"REFUSE")
    photo.save(tmp_path / "c.png")
    Image.open(PHOTOS[4]).save(tmp_path / "horse.png")  # RGBA
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:5000])  # a sound header, cut short
    (tmp_path / "notes.txt").write_text("not an image")
    Image.new("RGB", (3000, 3000)).save(tmp_path / "bomb.jpg")
    names = ["a.jpg", "bad.jpg", "rotated.jpg", "grey.jpg", "cmyk.jpg", "c.png", "refused.jpg", "horse.png"]
    names += ["notes.txt", "bomb.jpg"]
    paths = [tmp_path / name for name in names]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4_000_000)  # 3000 x 3000 is over twice this: refused
    processor = CLIPImageProcessor(fast_jpeg_decode=True)
    files = JpegBytesOrPixels(paths, processor)
    items = [files[i] for i in range(len(paths))]
    on_device = [names[index] for index, data, _, _ in items if data is not None]
    assert on_device == ["a.jpg", "bad.jpg", "rotated.jpg", "grey.jpg", "refused.jpg"]  # the CMYK one is not

    batch = _decode_on_device(items, files, torch.device("cpu"), pillow_as_nvjpeg(refuse=b"REFUSE"))
    good = [0, 2, 3, 4, 5, 6, 7]
    assert batch.indices == good
    failures = dict(batch.failures)
    assert sorted(failures) == [1, 8, 9]
    assert "could not be decoded" in failures[1]
    assert "is not an image Pillow can read" in failures[8]
    assert "decompression bomb" in failures[9]
    exact = CLIPImageProcessor().uint8_pixels([paths[index] for index in good])
    assert batch.pixels.dtype == torch.uint8 and torch.equal(batch.pixels, exact)


def tiny_model() -> CLIPModel:
    config = CLIPConfig(
        projection_dim=16,
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval()


def test_fast_decode_without_a_gpu_runs_the_cpu_path(tmp_path):
    """`fast_jpeg_decode` asks for device decoding only on CUDA; on the CPU the DataLoader path gives exactly
    what the processor itself gives."""
    model = tiny_model()
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


def test_device_path_through_the_workers_embeds_what_the_exact_path_embeds(tmp_path, monkeypatch):
    """`embed_image_files` down the device path (forced on the CPU, Pillow standing in for nvJPEG), with two
    worker processes and several batches: the same files in the same order, the same failure, and the
    embeddings the exact path gives."""
    import torchclip.image_files as image_files

    monkeypatch.setattr(image_files, "_decodes_on_device", lambda device, processor: True)
    monkeypatch.setattr(image_files, "_nvjpeg_decoder", pillow_as_nvjpeg)
    paths = []
    for index in range(11):
        photo = Image.open(PHOTOS[index % len(PHOTOS)])
        paths.append(tmp_path / f"{index:02d}.{'png' if index % 3 == 0 else 'jpg'}")
        (photo if index % 3 == 0 else photo.convert("RGB")).save(paths[-1])
    paths[5].write_bytes(b"broken")
    model = tiny_model()
    device_path = list(embed_image_files(model, CLIPImageProcessor(fast_jpeg_decode=True), paths, 4, num_workers=2))
    monkeypatch.undo()
    exact_path = list(embed_image_files(model, CLIPImageProcessor(), paths, 4, num_workers=0))
    assert [b.indices for b in device_path] == [b.indices for b in exact_path] == [[0, 1, 2, 3], [4, 6, 7], [8, 9, 10]]
    assert [b.failures for b in device_path] == [b.failures for b in exact_path]
    for ours, theirs in zip(device_path, exact_path, strict=True):
        assert torch.equal(ours.features, theirs.features)


def test_device_decoding_path_with_torchvisions_decoder(tmp_path):
    """The same with torchvision's own decode_jpeg, where torchvision is installed. On the CPU it is
    libjpeg-turbo with Pillow's settings, so every pixel is exact; nvJPEG on a GPU is another decoder, whose
    difference benchmarks/gpu_check.py measures."""
    pytest.importorskip("torchvision")
    from torchclip.image_files import _nvjpeg_decoder

    photo = Image.open(PHOTOS[3])
    photo.save(tmp_path / "a.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.open(PHOTOS[0]).save(tmp_path / "rotated.jpg", quality=80, exif=exif)
    photo.save(tmp_path / "c.png")
    paths = [tmp_path / "a.jpg", tmp_path / "rotated.jpg", tmp_path / "c.png"]
    processor = CLIPImageProcessor(fast_jpeg_decode=True)
    files = JpegBytesOrPixels(paths, processor)
    items = [files[index] for index in range(len(paths))]
    assert [item[1] is not None for item in items] == [True, True, False]
    batch = _decode_on_device(items, files, torch.device("cpu"), _nvjpeg_decoder())
    assert batch.indices == [0, 1, 2] and torch.equal(batch.pixels, CLIPImageProcessor().uint8_pixels(paths))
