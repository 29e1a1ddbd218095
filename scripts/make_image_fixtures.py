"""Make the golden image-preprocessing fixtures with the reference implementation (OpenCLIP / torchvision).

Run with the reference environment, which has open_clip and torchvision (the project's own tests never need it):

    /work/refenv/bin/python scripts/make_image_fixtures.py

Writes, under tests/data/image_fixtures/:
- small generated images of every Pillow mode the processor must handle, odd shapes, and an EXIF-rotated JPEG;
- golden/<image>__<config>.png and golden/table.npy: for every (image, config) the reference's output tensor,
  stored losslessly and compactly as 8-bit indices (a PNG, HWC) into a [3, 256] float32 table (the reference's
  ToTensor + Normalize applied to every 8-bit value): `table[c][png[..., c]]` is bit-identical to the reference's
  float32 output, which this script asserts before writing.

The reference for each config is OpenAI's original eval transform as OpenCLIP builds it:
- "224", "336": `open_clip.image_transform(n, is_train=False)` = Resize(n, bicubic) + CenterCrop(n) + RGB + ToTensor
  + Normalize (identical to `clip.load(...)[1]`);
- "hw192x256": `open_clip.image_transform((192, 256), is_train=False, resize_mode="squash")` = Resize((192, 256));
- "s200_crop180x232": the same torchvision transforms OpenAI composes, with Resize(200) and a non-square
  CenterCrop((180, 232)), which pads square images (exercises the crop offset rounding and zero padding).

The reference transform is applied to each image as it is stored, in its own mode (RGBA, LA, P with and without
transparency, CMYK, I;16, I, F, 1-bit): torchvision's Resize and CenterCrop work in that mode (Pillow resizes P and
1 with nearest-neighbour, RGBA and LA premultiplied, CMYK per channel) and OpenCLIP converts to RGB after the crop.
For RGB and L images the script also checks that converting first changes nothing (torchclip keeps greyscale as one
channel until the end). EXIF-rotated files are given upright (`ImageOps.exif_transpose`), as torchclip documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "images"
OUT = ROOT / "tests" / "data" / "image_fixtures"
MEAN = open_clip.OPENAI_DATASET_MEAN
STD = open_clip.OPENAI_DATASET_STD


def configs() -> dict[str, T.Compose]:
    to_rgb = open_clip.transform.MaybeConvertMode()
    return {
        "224": open_clip.image_transform(224, is_train=False),
        "336": open_clip.image_transform(336, is_train=False),
        "hw192x256": open_clip.image_transform((192, 256), is_train=False, resize_mode="squash"),
        "s200_crop180x232": T.Compose(
            [
                T.Resize(200, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop((180, 232)),
                to_rgb,
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]
        ),
    }


def smooth_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like test pattern: gradients, a disc and some noise (detail for the bicubic filter)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / max(width, 1) * 6.3 + seed)
    g = 255 * y / max(height - 1, 1)
    b = np.where((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2, 230, 20)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 4, (height, width, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def generated_images() -> dict[str, str]:
    """Write the generated images; return {name: file name}. Sizes are odd on purpose: the long edge after
    resizing leaves crop offsets of x.5, where torchvision's round() and floor division disagree."""
    OUT.mkdir(parents=True, exist_ok=True)
    rgb = smooth_rgb(57, 41, seed=1)
    alpha = np.tile(np.linspace(0, 255, 57).astype(np.uint8), (41, 1))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    images: dict[str, tuple[Image.Image, str]] = {
        "rgb": (Image.fromarray(rgb), "png"),
        "rgba": (Image.fromarray(np.dstack([rgb, alpha])), "png"),
        "la": (Image.fromarray(np.dstack([grey, alpha]), "LA"), "png"),
        "l": (Image.fromarray(grey), "png"),
        "p": (Image.fromarray(rgb).quantize(64), "png"),
        "cmyk": (Image.fromarray(rgb).convert("CMYK"), "tiff"),
        "i16": (Image.fromarray(grey.astype(np.uint16) * 2), "png"),  # values up to 510: Pillow clips at 255
        "i32": (Image.fromarray(grey.astype(np.int32) * 2 - 100), "tiff"),
        "f32": (Image.fromarray(grey.astype(np.float32) * 1.5 - 50.25), "tiff"),
        "bilevel": (Image.fromarray(grey).convert("1"), "png"),
        "one_pixel": (Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)), "png"),
        "wide": (Image.fromarray(smooth_rgb(301, 7, seed=2)), "png"),
        "tall": (Image.fromarray(smooth_rgb(5, 263, seed=3)), "png"),
    }
    # Larger images in the modes where resizing in the image's own mode differs from converting first:
    # transparent holes with coloured pixels under them (premultiplied resize), a palette image shrunk
    # (nearest-neighbour), CMYK ink with a gradient, a 16-bit range beyond 255.
    big = smooth_rgb(123, 87, seed=5)
    holes = np.where((np.indices((87, 123)).sum(axis=0) // 9) % 3 == 0, 0, 255).astype(np.uint8)
    images["rgba_holes"] = (Image.fromarray(np.dstack([big, holes])), "png")
    images["la_holes"] = (Image.fromarray(np.dstack([big[..., 1], holes]), "LA"), "png")
    images["p_big"] = (Image.fromarray(big).quantize(32), "png")
    images["cmyk_big"] = (Image.fromarray(big).convert("CMYK"), "tiff")
    images["i16_big"] = (Image.fromarray(big[..., 0].astype(np.uint16) * 3), "png")
    images["bilevel_big"] = (Image.fromarray(big[..., 2]).convert("1"), "png")
    p_transparent = Image.fromarray(rgb).quantize(64)
    p_transparent.info["transparency"] = 3
    images["p_transparency"] = (p_transparent, "png")
    written = {}
    for name, (image, fmt) in images.items():
        path = OUT / f"{name}.{fmt}"
        image.save(path)
        written[name] = path.name
    # A JPEG stored sideways with EXIF orientation 6 ("rotate 90 clockwise to view").
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_rgb(45, 31, seed=4)).save(OUT / "exif_rotated.jpg", quality=90, exif=exif)
    written["exif_rotated"] = "exif_rotated.jpg"
    return written


def value_table() -> torch.Tensor:
    """The reference's ToTensor + Normalize of every 8-bit value, per channel: [3, 256] float32."""
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (1, 1, 3))
    return T.Normalize(MEAN, STD)(T.ToTensor()(Image.fromarray(ramp)))[:, 0, :]


def to_indices(output: torch.Tensor, table: torch.Tensor) -> np.ndarray:
    """Invert the table lookup exactly and assert the round trip is bit-identical."""
    indices = torch.stack([torch.bucketize(output[c], table[c]) for c in range(3)]).clamp(0, 255)
    rebuilt = torch.stack([table[c][indices[c]] for c in range(3)])
    assert torch.equal(rebuilt, output), "reference output is not a table lookup of 8-bit values"
    return indices.to(torch.uint8).numpy()


# Which configs each image is checked at: all four for the photos, the RGB pattern and the larger mode images
# (the padded non-square crop pads in the image's own mode); the others at 224 and the non-square size, which
# keeps the committed fixtures around 2 MB.
ALL_CONFIGS = ("224", "336", "hw192x256", "s200_crop180x232")
SOME_CONFIGS = ("224", "hw192x256")
FULL_CHECK = {"rgb", "rgba_holes", "la_holes", "p_big", "p_transparency", "cmyk_big", "i16_big", "bilevel_big"}


def main() -> None:
    table = value_table()
    assert torch.all(table[:, 1:] > table[:, :-1]), "table must be increasing for the exact inversion"
    sources: dict[str, Image.Image] = {}
    for path in sorted(PHOTOS.glob("*.png")):
        sources[f"photo_{path.stem}"] = Image.open(path)
    for name, file_name in generated_images().items():
        sources[name] = Image.open(OUT / file_name)

    golden_dir = OUT / "golden"
    golden_dir.mkdir(exist_ok=True)
    for stale in golden_dir.iterdir():
        stale.unlink()
    np.save(golden_dir / "table.npy", table.numpy())
    transforms = configs()
    count = 0
    for name, image in sources.items():
        upright = ImageOps.exif_transpose(image)
        for config in ALL_CONFIGS if name.startswith("photo_") or name in FULL_CHECK else SOME_CONFIGS:
            transform = transforms[config]
            output = transform(upright)
            if upright.mode in ("RGB", "L"):
                assert torch.equal(output, transform(upright.convert("RGB"))), f"{name}: order matters?"
            indices = to_indices(output, table).transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(indices)).save(golden_dir / f"{name}__{config}.png", optimize=True)
            count += 1
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{count} golden tensors from {len(sources)} images; fixtures total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
