"""Image preprocessing for CLIP: the pixels the checkpoints were trained and evaluated with.

The default pipeline is OpenAI's original evaluation transform (``clip.load(...)[1]``, which OpenCLIP's
``image_transform(size, is_train=False)`` reproduces), step by step:

1. decode (EXIF orientation applied, see below) and keep the image in its own mode;
2. resize the shortest edge to ``size`` with Pillow's bicubic filter, in the image's own mode (what
   torchvision's ``Resize`` does on PIL images; the long edge is ``int(size * long / short)``). So
   Pillow resizes palette and 1-bit images with nearest-neighbour, RGBA and LA with premultiplied
   alpha, CMYK per channel and 16/32-bit modes in their own precision, as in the original;
3. centre crop with torchvision's offset rounding ``int(round((h - crop_h) / 2.0))``, padding with
   zeros where the crop is larger than the image;
4. convert to RGB with Pillow's ``convert("RGB")`` (the original's ``_convert_image_to_rgb``):
   transparency is *dropped*, not composited (a transparent pixel keeps the colour it stores,
   un-premultiplied), palettes map through their colours, 16-bit and float modes are clipped to 0..255;
5. scale to [0, 1] and normalise with the CLIP mean and std, fused into one multiply-add per channel
   (within 3e-7 of OpenAI's divide-subtract-divide: torchvision's ``ToTensor`` and ``Normalize``).

``pipeline="transformers"`` reproduces ``transformers.CLIPImageProcessor`` (5.x, the Pillow backend
it uses without torchvision) instead: transparency is composited onto white and the crop offset is
rounded down, ``(h - crop_h) // 2``, which on some image sizes puts the crop one pixel away from the
original's, and every image is converted to RGB before resizing, as transformers does.

Speed without changing a pixel: Pillow's resize runs two separable passes (horizontal then vertical,
or vertical first when the height shrinks much more than the width) with fixed-point coefficients
that depend only on the input and output sizes. ``torchclip.resample`` computes the same coefficients
and sums in the same integer arithmetic, vectorised, and only for the lines the centre crop keeps
(``_resize_and_crop``), reading Pillow's pixel memory without a copy. The result is bit-identical to
``image.resize(...).crop(...)`` (tests/test_image_processor_resize.py checks it on many sizes, modes and
filters, and a check at first use falls back to Pillow's own resize if this Pillow disagrees); palette,
1-bit and 16/32-bit images, nearest-neighbour and a crop larger than the image go through Pillow. RGB
JPEG files and bytes are decoded by simplejpeg straight into an array, with the same libjpeg-turbo
settings as Pillow and the same bytes (checked at first use, else Pillow decodes), ~1.5x faster.

Images given as files or bytes, and PIL images, have their EXIF orientation applied
(``PIL.ImageOps.exif_transpose``), so a portrait photo from a phone is seen upright. Arrays and
tensors (HWC or CHW, uint8, or float in [0, 1] which is rounded to 8 bits) become PIL images first,
so every input goes through the same Pillow operations.
"""

from __future__ import annotations

import functools
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from torchclip.batch import BatchFeature
from torchclip.hub import resolve_folder
from torchclip.io import IMAGE_PROCESSOR_CONFIG_FILE, PROCESSOR_CONFIG_FILE, read_json, write_text_atomic

__all__ = [
    "CLIPImageProcessor",
    "CLIPFeatureExtractor",
    "BatchFeature",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "warm_up",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIPELINES = ("openai", "transformers")
_EXIF_ORIENTATION = 0x0112

# Pillow keeps an image over 16 MB (4 MP of RGB) in a chain of blocks, which its Arrow export cannot hand
# out in place, so the resize would first copy it: for a 12 MP photo that copy cost more than the resize
# (bench_image_processor.py section 5, 4000x3000). One block per image, as Pillow's Arrow support intends;
# this is Pillow's process-wide allocator setting, and only changes how its images are laid out in memory.
Image.core.set_use_block_allocator(1)
# Keys that describe a config file rather than the processing; read without complaint.
_METADATA_KEYS = {"image_processor_type", "feature_extractor_type", "processor_class", "_processor_class"}

ImageItem = Image.Image | str | os.PathLike | bytes | bytearray | np.ndarray | torch.Tensor
ImageInput = ImageItem | list | tuple


def _size_dict(value: int | dict | None, *, name: str, square: bool) -> dict[str, int]:
    """Normalise an int or dict size to a dict: ints mean the shortest edge for `size`, a square for crops."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must be an int or a dict, got {value!r}")
    if isinstance(value, int):
        return {"height": value, "width": value} if square else {"shortest_edge": value}
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"shortest_edge"} and not square or keys == {"height", "width"}:
            if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
                return {k: int(v) for k, v in value.items()}
            raise ValueError(f"{name} values must be positive ints, got {value!r}")
    allowed = "{'height', 'width'}" if square else "{'shortest_edge'} or {'height', 'width'}"
    raise ValueError(f"{name} must be an int or a dict with keys {allowed}, got {value!r}")


def _channel_values(value: float | list | tuple, name: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name} must be one float or three (R, G, B), got {value!r}")
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class _Settings:
    """Everything one call needs, resolved from the processor's attributes and the call's overrides."""

    do_resize: bool
    size: dict[str, int]
    resample: int
    do_center_crop: bool
    crop_size: dict[str, int]
    do_convert_rgb: bool
    pipeline: str
    fast_jpeg_decode: bool


class CLIPImageProcessor:
    """Turns images into CLIP's `pixel_values` [N, 3, H, W], reproducing OpenAI's original transform.

    Every step has `transformers.CLIPImageProcessor`'s switch and parameter (`do_resize`/`size`/`resample`,
    `do_center_crop`/`crop_size`, `do_rescale`/`rescale_factor`, `do_normalize`/`image_mean`/`image_std`,
    `do_convert_rgb`); any of them can also be overridden for one call. Two options are torchclip's own:

    - `pipeline`: "openai" (default) or "transformers" (bit-compatible with `transformers.CLIPImageProcessor`,
      see the module docstring for the two differences);
    - `fast_jpeg_decode`: off by default. When on, JPEG files and bytes are decoded at a reduced scale
      (Pillow's `Image.draft`, a DCT-domain 1/2, 1/4 or 1/8 reduction that keeps both edges at least
      twice the target size, the margin Pillow's own `thumbnail` uses). 1.3-1.7x faster on 1-3 MP photos,
      but the pixels differ from the exact path (on the benchmark's photos by 0.9 of an 8-bit level on
      average; `benchmarks/bench_image_processor.py` reports it). PIL images passed in are used as given.
      Folders embedded on a CUDA device with torchvision decode JPEGs with nvJPEG instead, at full size,
      and resize them exactly on the GPU (`torchclip.image_files`).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: int | dict[str, int] | None = None,
        resample: int = Image.Resampling.BICUBIC,
        do_center_crop: bool = True,
        crop_size: int | dict[str, int] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        do_convert_rgb: bool = True,
        pipeline: str = "openai",
        fast_jpeg_decode: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - _METADATA_KEYS)
        if unknown:
            warnings.warn(f"CLIPImageProcessor ignores unknown settings {unknown}", stacklevel=2)
        self.do_resize = do_resize
        self.size = _size_dict(224 if size is None else size, name="size", square=False)
        self.resample = int(resample)
        self.do_center_crop = do_center_crop
        self.crop_size = _size_dict(224 if crop_size is None else crop_size, name="crop_size", square=True)
        self.do_rescale = do_rescale
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = do_normalize
        self.image_mean = list(_channel_values(OPENAI_CLIP_MEAN if image_mean is None else image_mean, "image_mean"))
        self.image_std = list(_channel_values(OPENAI_CLIP_STD if image_std is None else image_std, "image_std"))
        self.do_convert_rgb = do_convert_rgb
        self.pipeline = pipeline
        self.fast_jpeg_decode = fast_jpeg_decode
        self._settings()  # validate now, not at the first call

    # ------------------------------------------------------------------ config files

    def to_dict(self) -> dict[str, Any]:
        """The settings as `preprocessor_config.json` holds them (transformers reads this back)."""
        return {
            "do_resize": self.do_resize,
            "size": dict(self.size),
            "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": dict(self.crop_size),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_convert_rgb": self.do_convert_rgb,
            "pipeline": self.pipeline,
            "fast_jpeg_decode": self.fast_jpeg_decode,
            "image_processor_type": "CLIPImageProcessor",
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, json_file_path: str | os.PathLike) -> CLIPImageProcessor:
        return cls.from_dict(read_json(json_file_path))

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Write `to_json_string()` to a file (atomically; what `from_pretrained` reads as
        `preprocessor_config.json`)."""
        write_text_atomic(json_file_path, self.to_json_string())

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs: Any) -> CLIPImageProcessor:
        """Build from a config dict; `kwargs` override its entries."""
        return cls(**{**config, **kwargs})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> CLIPImageProcessor:
        """Load from a checkpoint folder (or hub id): `processor_config.json` ("image_processor" entry,
        transformers 5.x) first, else `preprocessor_config.json` (4.x and earlier), like transformers."""
        folder = resolve_folder(name_or_path, what="image processor")
        config = None
        processor_file = folder / PROCESSOR_CONFIG_FILE
        if processor_file.is_file():
            config = read_json(processor_file).get("image_processor")
        if config is None:
            config_file = folder / IMAGE_PROCESSOR_CONFIG_FILE
            if not config_file.is_file():
                raise FileNotFoundError(
                    f"no image processor config in {str(folder)!r}: expected {IMAGE_PROCESSOR_CONFIG_FILE} or a "
                    f"{PROCESSOR_CONFIG_FILE} with an 'image_processor' entry"
                )
            config = read_json(config_file)
        return cls.from_dict(config, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> list[Path]:
        """Write `preprocessor_config.json` into `folder` (created if needed, the file written atomically);
        returns the files written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / IMAGE_PROCESSOR_CONFIG_FILE
        write_text_atomic(path, self.to_json_string())
        return [path]

    # ------------------------------------------------------------------ processing

    def _settings(self, **overrides: Any) -> _Settings:
        get = {**self.__dict__, **overrides}.__getitem__
        settings = _Settings(
            do_resize=bool(get("do_resize")),
            size=_size_dict(get("size"), name="size", square=False),
            resample=int(get("resample")),
            do_center_crop=bool(get("do_center_crop")),
            crop_size=_size_dict(get("crop_size"), name="crop_size", square=True),
            do_convert_rgb=bool(get("do_convert_rgb")),
            pipeline=get("pipeline"),
            fast_jpeg_decode=bool(get("fast_jpeg_decode")),
        )
        if settings.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {settings.pipeline!r}")
        if settings.resample not in {int(r) for r in Image.Resampling}:
            raise ValueError(f"resample must be a PIL.Image.Resampling filter (0-5), got {settings.resample!r}")
        return settings

    def _scale_and_shift(self, **overrides: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (a, b) with output = pixel * a + b: rescale and normalise fused, computed in float64."""
        get = {**self.__dict__, **overrides}.__getitem__
        scale = torch.ones(3, dtype=torch.float64)
        shift = torch.zeros(3, dtype=torch.float64)
        if get("do_rescale"):
            scale *= float(get("rescale_factor"))
        if get("do_normalize"):
            mean = torch.tensor(_channel_values(get("image_mean"), "image_mean"), dtype=torch.float64)
            std = torch.tensor(_channel_values(get("image_std"), "image_std"), dtype=torch.float64)
            if (std == 0).any():
                raise ValueError(f"image_std must not contain zero, got {std.tolist()}")
            scale, shift = scale / std, -mean / std
        return scale.float(), shift.float()

    def preprocess(self, images: ImageInput, **kwargs: Any) -> BatchFeature:
        """Same as calling the processor."""
        return self(images, **kwargs)

    def __call__(
        self,
        images: ImageInput,
        return_tensors: str | None = None,
        num_workers: int | None = None,
        input_data_format: str | None = None,
        data_format: str = "channels_first",
        **overrides: Any,
    ) -> BatchFeature:
        """Preprocess one image or a list; returns a BatchFeature with `pixel_values`.

        `return_tensors`: "pt" (a float32 tensor [N, 3, H, W]), "np" (the same as an array) or None (a list
        of [3, H, W] arrays, which may differ in size when cropping is off). `num_workers` threads decode
        and resize images in parallel (Pillow releases the GIL); default: one per CPU core, at most 8.
        Any setting (`do_resize`, `size`, `crop_size`, ...) can be overridden for this call.
        `input_data_format` ("channels_first" / "channels_last") says how 3-D arrays and tensors hold their
        channels (default: guessed from the shape); `data_format` of the output is "channels_first" only.
        Bad input raises before anything is returned, naming the item that was wrong.
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        settings = self._call_settings(overrides)
        table = _level_table(*self._scale_and_shift(**overrides))
        if data_format not in ("channels_first", "ChannelDimension.FIRST"):
            raise ValueError(f"data_format must be 'channels_first' (CLIP's pixel_values), got {data_format!r}")
        arrays = self._resize_and_crop_all(images, settings, num_workers, input_data_format)
        if return_tensors is None:
            return BatchFeature(pixel_values=[_normalise(array[None], table)[0].numpy() for array in arrays])
        pixel_values = _normalise(_stack(arrays), table)
        return BatchFeature(pixel_values=pixel_values if return_tensors == "pt" else pixel_values.numpy())

    def uint8_pixels(self, images: ImageInput, num_workers: int | None = None, **overrides: Any) -> torch.Tensor:
        """Steps 1-4 without the last: uint8 [N, 3, H, W], the 8-bit pixels before rescale and normalise.

        What decoding workers hand to the process that runs the model (a quarter of float32's bytes);
        `rescale_and_normalize` finishes them there, on the model's device, to exactly the pixel_values
        a call gives. Same inputs, checks and errors as a call.
        """
        arrays = self._resize_and_crop_all(images, self._call_settings(overrides), num_workers, None)
        # Channels moved by NumPy: torch's copy would wake its thread pool, whose threads then spin-wait and
        # take a core's CPU from whatever else runs (the model, a server's other requests) after each call.
        return torch.from_numpy(np.ascontiguousarray(_stack(arrays).transpose(0, 3, 1, 2)))

    def resize_and_crop_tensors(self, images: torch.Tensor, **overrides: Any) -> torch.Tensor:
        """Steps 2-3 on decoded images already on a device (a GPU's, where the device path decodes JPEGs):
        same-sized uint8 RGB [N, 3, H, W] -> uint8 [N, 3, h, w], resized and centre-cropped with
        `torchclip.resample`'s integer arithmetic on that device. Bit for bit what `uint8_pixels` gives for
        the same decoded RGB pixels (greyscale replicated to RGB resizes the same)."""
        from torchclip import resample as vectorised  # noqa: PLC0415 - numba takes ~0.3 s to import

        settings = self._call_settings(overrides)
        if settings.resample not in vectorised.FILTER_SUPPORT:
            raise ValueError(f"resample={settings.resample} (nearest) has no tensor resize; use the CPU path")
        height, width = images.shape[-2:]
        new_size = _resized_size(width, height, settings.size) if settings.do_resize else (width, height)
        box = _crop_box(*new_size, settings.crop_size, settings.pipeline) if settings.do_center_crop else None
        left, top, right, bottom = box or (0, 0, *new_size)
        inside = (max(left, 0), max(top, 0), min(right, new_size[0]), min(bottom, new_size[1]))
        resized = vectorised.resize_and_crop_tensor(images, new_size, inside, settings.resample)
        if inside == (left, top, right, bottom):
            return resized
        out = images.new_zeros(*images.shape[:-2], bottom - top, right - left)  # zeros where the crop pads
        out[..., inside[1] - top : inside[3] - top, inside[0] - left : inside[2] - left] = resized
        return out

    def rescale_and_normalize(self, pixels: torch.Tensor, **overrides: Any) -> torch.Tensor:
        """Step 5 on 8-bit pixels [N, 3, H, W] (uint8, or float holding 0..255) on any device: float32
        pixel_values. uint8 on the CPU is looked up in the table of each channel's 256 levels (the floats of
        the multiply-add; `_level_table`), in one thread: 2.5 ms a batch of 32 against 6 ms for the
        multiply-add in one thread and ~34 ms of CPU in two inside the folder pipeline, where it runs between
        the model's batches (scratch timings in docs/performance.md, 2026-12-08). Elsewhere it is one fused
        multiply-add per channel on the pixels' device."""
        scale, shift = self._scale_and_shift(**overrides)
        if pixels.device.type == "cpu" and pixels.dtype == torch.uint8:
            return _normalise(pixels.numpy().transpose(0, 2, 3, 1), _level_table(scale, shift))
        scale, shift = (values.to(pixels.device) for values in (scale, shift))
        return _multiply_add(pixels, scale, shift)

    def _call_settings(self, overrides: dict[str, Any]) -> _Settings:
        unknown = sorted(set(overrides) - set(self.to_dict()) - _METADATA_KEYS)
        if unknown:
            raise TypeError(f"unknown preprocessing settings {unknown}; known: {sorted(self.to_dict())}")
        return self._settings(**overrides)

    def _resize_and_crop_all(
        self, images: ImageInput, settings: _Settings, num_workers: int | None, input_data_format: str | None
    ) -> list[np.ndarray]:
        """Steps 1-4 for every image: uint8 [H, W, 3] arrays, decoded and resized in `num_workers` threads."""
        items = _as_list(images)
        if input_data_format is not None:
            items = [_as_channels_last(item, str(input_data_format)) for item in items]
        sources = [_check_item(item, index) for index, item in enumerate(items)]

        workers = num_workers or min(8, os.cpu_count() or 1)

        def work(index: int) -> np.ndarray | _ImageFailure:
            try:
                return _process_one(sources[index], settings)
            except _ImageFailure as exc:
                return exc

        if workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(min(workers, len(items))) as pool:
                results = list(pool.map(work, range(len(items))))
        else:
            results = [work(index) for index in range(len(items))]
        failed = [index for index, result in enumerate(results) if isinstance(result, _ImageFailure)]
        if failed:
            first = results[failed[0]]
            more = f" ({len(failed) - 1} more image(s) also failed: {failed[1:]})" if len(failed) > 1 else ""
            raise ValueError(f"image {_describe(failed[0], items[failed[0]])}: {first}{more}") from first.__cause__
        return results


class CLIPFeatureExtractor(CLIPImageProcessor):
    """The name the CLIP documentation uses (transformers 4.x `CLIPFeatureExtractor`); the same processor."""


# ---------------------------------------------------------------------- pixel arithmetic


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Same-sized uint8 [H, W, C] arrays -> one [N, H, W, C] batch; an error saying what to change if not."""
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"images have different sizes after preprocessing ({sorted(shapes)}), so they cannot be "
            "stacked: turn on do_center_crop, resize to {'height', 'width'}, or pass return_tensors=None"
        )
    return np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8)


def _level_table(scale: torch.Tensor, shift: torch.Tensor) -> np.ndarray:
    """float32 [C, 256]: `_multiply_add` of each 8-bit level, per channel. An 8-bit pixel has 256 values, so
    a call computes them once and `_normalise` looks each pixel up."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, len(scale), 256, 1)
    return _multiply_add(levels, scale, shift)[0, :, :, 0].numpy()


def _normalise(batch: np.ndarray, table: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] (any strides) -> float32 [N, C, H, W], each pixel looked up in its channel's
    `_level_table`: the same floats as the multiply-add on each pixel (tests/test_image_processor.py), in
    4-8x less time than torch's multiply-add over the channels-last batch (`bench_image_processor.py`
    section 4)."""
    from torchclip import resample as vectorised  # noqa: PLC0415 - numba takes ~0.3 s to import: only image work pays it

    return torch.from_numpy(vectorised.lookup_channels_first(batch, table))


def _multiply_add(pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rescale and normalise [N, C, H, W] pixels in one fused pass (within 3e-7 of divide-subtract-divide)."""
    return torch.addcmul(shift[:, None, None], pixels, scale[:, None, None])


# ---------------------------------------------------------------------- input checking and decoding


class _ImageFailure(Exception):
    """A failure while decoding or processing one image; the caller adds which item it was."""


def _as_list(images: ImageInput) -> list:
    """One image, a (nested) list/tuple of images, or a 4-D array/tensor (a batch) -> a list of single images."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in (_as_list(item) if isinstance(item, (list, tuple)) else [item])]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def _as_channels_last(item: Any, input_data_format: str) -> Any:
    """A 3-D array or tensor as an HWC NumPy array, its channel axis named by `input_data_format`."""
    if not isinstance(item, (np.ndarray, torch.Tensor)) or item.ndim != 3:
        return item
    array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
    if input_data_format in ("channels_first", "ChannelDimension.FIRST"):
        return array.transpose(1, 2, 0)
    if input_data_format in ("channels_last", "ChannelDimension.LAST"):
        return array
    raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")


def _describe(index: int, item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return f"#{index} ({os.fspath(item)!r})"
    return f"#{index}"


def _check_item(item: Any, index: int) -> Image.Image | Path | bytes | np.ndarray:
    """Cheap up-front checks (type, file exists and is not empty, array shape/dtype/values), so a bad
    item is reported before any decoding starts. Returns what the worker decodes."""
    where = _describe(index, item)
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"image {where}: no such file")
        if not path.is_file():
            raise IsADirectoryError(f"image {where}: is not a file")
        if path.stat().st_size == 0:
            raise ValueError(f"image {where}: the file is empty (0 bytes)")
        return path
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise ValueError(f"image {where}: the bytes are empty")
        return bytes(item)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        is_tensor = isinstance(item, torch.Tensor)
        array = item.detach().cpu().numpy() if is_tensor else item
        try:
            return _check_array(array, channels_first=is_tensor)
        except ValueError as exc:
            raise ValueError(f"image {where}: {exc}") from None
    raise TypeError(
        f"image {where}: unsupported type {type(item).__name__}; expected a PIL image, a file path, bytes, "
        "a NumPy array or a torch tensor (or a list of them)"
    )


def _check_array(array: np.ndarray, *, channels_first: bool) -> np.ndarray:
    """Validate an image array and return it as uint8 HWC (H x W, 1, 3 or 4 channels).

    3-D arrays are read as channels-last when the last axis has 1, 3 or 4 entries, else channels-first;
    tensors (`channels_first=True`) prefer channels-first, PyTorch's convention. Floats must lie in
    [0, 1] and are rounded to 8 bits; integers must lie in 0..255.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
        if not first and not last:
            raise ValueError(
                f"array of shape {array.shape} has no channel axis of size 1, 3 or 4 (expected HWC or CHW)"
            )
        if first and (channels_first or not last):
            array = array.transpose(1, 2, 0)
    else:
        raise ValueError(f"array of shape {array.shape} has rank {array.ndim}; expected (H, W), (H, W, C) or (C, H, W)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"array of shape {array.shape} is empty")
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise ValueError("float array contains NaN")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float array values must lie in [0, 1], got [{low}, {high}]")
        return np.round(array.astype(np.float64) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype != np.uint8:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high > 255:
                raise ValueError(f"integer array values must lie in 0..255, got {array.dtype} in [{low}, {high}]")
        return np.ascontiguousarray(array, dtype=np.uint8)
    raise ValueError(f"array dtype {array.dtype} is not supported; use uint8 or float in [0, 1]")


_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _open(source: Image.Image | Path | bytes | np.ndarray, settings: _Settings) -> Image.Image | np.ndarray:
    """Decode a checked source, EXIF orientation applied: a loaded PIL image, or for an RGB JPEG file or
    bytes (exact path) its uint8 [H, W, 4] RGBX pixels decoded by libjpeg-turbo straight into an array."""
    if isinstance(source, np.ndarray):
        return Image.fromarray(source[:, :, 0] if source.shape[2] == 1 else source, _ARRAY_MODES[source.shape[2]])
    image = (
        Image.open(source if isinstance(source, Path) else io.BytesIO(source))
        if not isinstance(source, Image.Image)
        else source
    )
    if image is not source and image.format == "JPEG" and image.mode == "RGB" and not settings.fast_jpeg_decode:
        pixels = _decode_rgb_jpeg(source.read_bytes() if isinstance(source, Path) else source)
        if pixels is not None:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)  # a JPEG's EXIF is in its header
            image.close()
            return _orient(pixels, orientation)
    if settings.fast_jpeg_decode and image is not source and image.format == "JPEG" and settings.do_resize:
        target = settings.size.get("shortest_edge") or max(settings.size["height"], settings.size["width"])
        image.draft(None, (2 * target, 2 * target))
    image.load()
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return ImageOps.exif_transpose(image) if orientation != 1 else image


def _decode_rgb_jpeg(data: bytes) -> np.ndarray | None:
    """An RGB JPEG's pixels, decoded by simplejpeg (libjpeg-turbo with Pillow's settings: accurate integer
    DCT, fancy upsampling) straight into an [H, W, 4] array of RGBX pixels, releasing the GIL: ~1.5x less
    CPU than Pillow, which decodes with the same library into its own 4-byte pixels (benchmarks/bench_image_processor.py
    section 4: 6.5-7.7 against 10.6-11.6 ms per 1-3 MP photo). None, for Pillow to decode, without
    simplejpeg, where its libjpeg-turbo gives other bytes than Pillow's (checked once), or when it refuses
    the file (Pillow then says what is wrong). 4 bytes a pixel, as Pillow keeps them, decode in the same time
    as 3 and let the resize move each pixel as one word (`resample._horizontal_pass`)."""
    if not _simplejpeg_matches_pillow():
        return None
    import simplejpeg  # noqa: PLC0415 - optional: checked by _simplejpeg_matches_pillow

    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGBX")
    except ValueError:
        return None


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`ImageOps.exif_transpose` on an [H, W, C] array: the same flips and turns, as a contiguous array."""
    transposed = {
        2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
        3: lambda a: a[::-1, ::-1],  # ROTATE_180
        4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
        5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],  # ROTATE_270 (a quarter turn clockwise)
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
        8: lambda a: a.transpose(1, 0, 2)[::-1],  # ROTATE_90 (a quarter turn anticlockwise)
    }.get(orientation)
    return np.ascontiguousarray(transposed(pixels)) if transposed else pixels


@functools.cache
def _simplejpeg_matches_pillow() -> bool:
    """Whether simplejpeg is installed and decodes this Pillow's JPEGs to the same bytes, checked once on
    small JPEGs of every chroma subsampling, baseline and progressive (two libjpeg-turbo builds could differ)."""
    try:
        import simplejpeg  # noqa: PLC0415 - optional dependency
    except ImportError:
        return False
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-8, 9, (61, 83, 3)), axis=1).clip(0, 255).astype(np.uint8)
    for options in ({"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True}):
        buffer = io.BytesIO()
        Image.fromarray(smooth).save(buffer, "JPEG", quality=85, **options)
        data = buffer.getvalue()
        with Image.open(io.BytesIO(data)) as image:
            expected = np.asarray(image.convert("RGB"))
        if not np.array_equal(simplejpeg.decode_jpeg(data, colorspace="RGBX")[..., :3], expected):
            return False
    return True


def _to_rgb(image: Image.Image, pipeline: str) -> Image.Image:
    """Pillow's plain convert("RGB") (the original), or transformers' compositing onto white."""
    if pipeline == "transformers" and ("A" in image.getbands() or image.info.get("transparency") is not None):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _resized_size(width: int, height: int, size: dict[str, int]) -> tuple[int, int]:
    """Target (width, height): torchvision's shortest-edge rule, or the exact {'height', 'width'}."""
    if "shortest_edge" not in size:
        return size["width"], size["height"]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _crop_box(width: int, height: int, crop: dict[str, int], pipeline: str) -> tuple[int, int, int, int]:
    """Centre-crop box; Pillow fills the area outside the image with zeros, which matches both references'
    zero padding (torchvision pads floor(d/2) before and then crops at offset 0; transformers' floor
    division gives the same box for both the crop and the pad case)."""
    crop_w, crop_h = crop["width"], crop["height"]
    if pipeline == "transformers":
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
    else:
        left = int(round((width - crop_w) / 2.0)) if width >= crop_w else -((crop_w - width) // 2)
        top = int(round((height - crop_h) / 2.0)) if height >= crop_h else -((crop_h - height) // 2)
    return left, top, left + crop_w, top + crop_h


# ---------------------------------------------------------------------- resizing only what the crop keeps

# Modes torchclip.resample resizes (its bands per pixel); RGBA and LA are resized premultiplied (RGBa, La),
# exactly as Image.resize does it. Other modes (palette, 1-bit, 16/32-bit) go through Pillow.
_RESAMPLE_BANDS = {"L": 1, "RGB": 3, "RGBX": 4, "CMYK": 4, "RGBa": 4, "La": 2}
_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}


def _pixels(image: Image.Image) -> np.ndarray:
    """An 8-bit image as uint8 [H, W, bands or 4]: Pillow's own memory through its Arrow export (no copy;
    Pillow keeps 3- and 4-band pixels as 4 bytes, bands first), else a NumPy copy (an image Pillow stores
    in several blocks, La, whose alpha sits in the 4th byte, or a Pillow with no Arrow export)."""
    height, width = image.size[1], image.size[0]
    if image.mode != "La":
        try:
            flat = pa.array(image)
            flat = flat.flatten() if pa.types.is_fixed_size_list(flat.type) else flat
            return flat.to_numpy(zero_copy_only=True).reshape(height, width, -1)
        except (ValueError, TypeError, pa.ArrowException):  # TypeError: a Pillow older than 11.2 (no Arrow export)
            pass
    return np.asarray(image).reshape(height, width, -1)


def _vectorised(
    image: Image.Image, new_size: tuple[int, int], box: tuple[int, int, int, int], resample: int
) -> Image.Image:
    """torchclip.resample's resize + crop of `image` (a mode in _RESAMPLE_BANDS), as a PIL image."""
    from torchclip import resample as vectorised  # noqa: PLC0415 - numba takes ~0.3 s to import: only image work pays it

    bands = _RESAMPLE_BANDS[image.mode]
    out = vectorised.resize_and_crop(_pixels(image), bands, new_size, box, resample)
    return Image.frombytes(image.mode, (out.shape[1], out.shape[0]), out.tobytes())


def _resize_and_crop(
    image: Image.Image | np.ndarray, new_size: tuple[int, int], box: tuple[int, int, int, int], resample: int
) -> Image.Image | np.ndarray:
    """`image.resize(new_size, resample).crop(box)`, bit for bit, computing only what the crop keeps.

    8-bit images go through torchclip.resample (Pillow's arithmetic, vectorised, only over the lines the
    crop keeps); the rest, and a crop that pads, through Pillow. RGB pixels given as an array [H, W, 3 or 4
    (RGBX)] come back as one [h, w, 3].
    """
    if isinstance(image, np.ndarray):
        if _vectorisable((image.shape[1], image.shape[0]), new_size, box, resample):
            from torchclip import resample as vectorised  # noqa: PLC0415 - numba takes ~0.3 s to import

            return vectorised.resize_and_crop(image, 3, new_size, box, resample)
        rgb = Image.fromarray(np.ascontiguousarray(image[..., :3]))
        return np.asarray(_resize_and_crop(rgb, new_size, box, resample))
    mode = image.mode
    source_mode = _PREMULTIPLIED.get(mode, mode)
    if source_mode in _RESAMPLE_BANDS and _vectorisable(image.size, new_size, box, resample):
        out = _vectorised(image.convert(source_mode) if source_mode != mode else image, new_size, box, resample)
        return out.convert(mode) if source_mode != mode else out
    resized = image.resize(new_size, resample) if new_size != image.size else image
    return resized.crop(box) if box != (0, 0, *resized.size) else resized


def _vectorisable(
    size: tuple[int, int], new_size: tuple[int, int], box: tuple[int, int, int, int], resample: int
) -> bool:
    """Whether torchclip.resample does this resize + crop: a real resize, a crop inside the result, one of
    Pillow's antialiasing filters, and a Pillow whose arithmetic it matches."""
    inside = 0 <= box[0] < box[2] <= new_size[0] and 0 <= box[1] < box[3] <= new_size[1]
    return inside and new_size != size and resample in _VECTORISED_FILTERS and _vectorised_matches_pillow()


_VECTORISED_FILTERS = {
    Image.Resampling.BOX,
    Image.Resampling.BILINEAR,
    Image.Resampling.HAMMING,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
}


def warm_up() -> None:
    """Load the compiled resize and pixel lookup now rather than at the first image: numba's import and
    kernels cost ~0.9 s once per process (~6 s on a machine's first run, which compiles them). A server
    calls this before it takes requests, so that its first image query is not the slow one."""
    _vectorised_matches_pillow()
    _simplejpeg_matches_pillow()
    table = _level_table(torch.ones(3), torch.zeros(3))
    pixels = np.zeros((1, 1, 1, 3), np.uint8)
    _normalise(pixels, table)  # a batch (return_tensors="pt")
    pixels.flags.writeable = False
    _normalise(pixels, table)  # one image's read-only view of Pillow's pixels (return_tensors=None): numba's own type
    _normalise(np.zeros((1, 3, 1, 1), np.uint8).transpose(0, 2, 3, 1), table)  # rescale_and_normalize's view


@functools.cache
def _vectorised_matches_pillow() -> bool:
    """Whether torchclip.resample gives this Pillow's pixels: checked once, on small images in both pass
    orders and with every filter (a Pillow whose arithmetic or pass order differs gets its own resize)."""
    rng = np.random.default_rng(0)
    for size, new_size in (((64, 256), (60, 40)), ((256, 64), (40, 60)), ((97, 41), (150, 13))):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for resample in _VECTORISED_FILTERS:
            box = (1, 2, new_size[0] - 1, new_size[1])
            # Sliced in NumPy: Pillow's crop() would warn of a decompression bomb under a lowered MAX_IMAGE_PIXELS.
            expected = np.asarray(image.resize(new_size, resample))[box[1] : box[3], box[0] : box[2]]
            if not np.array_equal(np.asarray(_vectorised(image, new_size, box, resample)), expected):
                return False
    return True


def _process_one(source: Image.Image | Path | bytes | np.ndarray, settings: _Settings) -> np.ndarray:
    """Decode, resize, crop and convert one image; returns uint8 HWC (3 channels). The OpenAI pipeline
    resizes and crops in the image's own mode and converts to RGB last, as the original; transformers'
    converts first."""
    try:
        image = _open(source, settings)  # a PIL image, or an RGB JPEG's pixels as an array
        if isinstance(image, Image.Image):
            if not settings.do_convert_rgb and image.mode != "RGB":
                raise _ImageFailure(f"do_convert_rgb=False needs RGB images, got mode {image.mode!r}")
            # Greyscale stays one channel until the end in both pipelines: a third of the work, and the same
            # pixels, since Pillow resizes each channel of an RGB image with the same integer arithmetic
            # (make_image_fixtures.py asserts this on every greyscale image).
            if settings.pipeline == "transformers" and image.mode not in ("RGB", "L"):
                image = _to_rgb(image, settings.pipeline)
            size = image.size
        else:
            size = (image.shape[1], image.shape[0])
        new_size = _resized_size(*size, settings.size) if settings.do_resize else size
        if new_size[0] * new_size[1] > (Image.MAX_IMAGE_PIXELS or float("inf")):
            raise _ImageFailure(
                f"resizing {size[0]}x{size[1]} to {new_size[0]}x{new_size[1]} exceeds Pillow's "
                f"MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS}); the aspect ratio is too extreme"
            )
        box = _crop_box(*new_size, settings.crop_size, settings.pipeline) if settings.do_center_crop else None
        image = _resize_and_crop(image, new_size, box or (0, 0, *new_size), settings.resample)
        if isinstance(image, np.ndarray):
            return image
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except DECODING_ERRORS as exc:
        raise _ImageFailure(_decoding_failure(exc)) from exc


# What Pillow raises for a file it cannot read; `_decoding_failure` says it in words, for every reader.
DECODING_ERRORS = (Image.DecompressionBombError, UnidentifiedImageError, OSError, ValueError, SyntaxError)


def _decoding_failure(exc: Exception) -> str:
    """Why an image could not be read, as the user is told it (after the image's name)."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"refused as a possible decompression bomb (Pillow's MAX_IMAGE_PIXELS): {exc}"
    if isinstance(exc, UnidentifiedImageError):
        return "is not an image Pillow can read (unknown or corrupt format)"
    return f"could not be decoded: {type(exc).__name__}: {exc}"
