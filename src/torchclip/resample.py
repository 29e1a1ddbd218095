"""Pillow's 8-bit resize, bit for bit, computing only what a crop keeps, vectorised.

Pillow's ``Image.resize`` (``libImaging/Resample.c``) is two separable passes, each a convolution with
22-bit fixed-point taps that depend only on the input and output lengths along its axis, rounded and
clipped to 8 bits in between. This module computes the same taps with the same float64 operations
(``coefficients``, compiled by numba so that ``sin``/``cos`` are the C library's, as Pillow's) and applies
them with the same int32 arithmetic: integer sums do not depend on their order, so any order gives
Pillow's exact result, and the order here is the one a CPU's vector units like:

* the vertical pass reads whole rows, so its inner loop runs along contiguous bytes;
* the horizontal pass copies a block of 16 rows into a column-major buffer first (48 bytes a column for
  RGB, each band's 16 rows together), so its inner loop also runs along contiguous bytes, 48 int32 sums at
  a time, two taps a step, and its results go back to rows the same way. 4-byte pixels (an RGBX decode,
  Pillow's own memory) are read one uint32 word each and split into bands in registers.

Only the output lines inside the crop box are computed, and only the input lines they read. A 1500x1000
photo resized to 336x224 and centre-cropped to 224x224 takes ~1.8 ms against ~10 ms for Pillow's resize and
crop (one thread; `benchmarks/bench_image_processor.py` section 5 reproduces it). The tests check every
filter, mode, size and crop they try against Pillow itself.

`resize_and_crop_tensor` is the same arithmetic in torch, for uint8 tensors on any device (a GPU's, where
the device path decodes JPEGs): the same taps, the same int32 sums, so the same bytes.
"""

from __future__ import annotations

import functools
import math
import sys

import numba
import numpy as np
import torch

__all__ = [
    "FILTER_SUPPORT",
    "coefficients",
    "horizontal_first",
    "lookup_channels_first",
    "resize_and_crop",
    "resize_and_crop_tensor",
]

PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2 (8 bits of result, 2 of headroom for negative lobes)
_HALF = 1 << (PRECISION_BITS - 1)
_LANES = 48  # int32 sums per horizontal step: 16 RGB rows, 12 of 4 bands, 48 of 1 (six AVX2 registers)

# Pillow's filter numbers (Image.Resampling) -> half-width of the filter's support.
BOX, BILINEAR, HAMMING, BICUBIC, LANCZOS = 4, 2, 5, 3, 1
FILTER_SUPPORT = {BOX: 0.5, BILINEAR: 1.0, HAMMING: 1.0, BICUBIC: 2.0, LANCZOS: 3.0}
_HAMMING_A, _HAMMING_B = float(np.float32(0.54)), float(np.float32(0.46))  # C float literals 0.54f, 0.46f


def _compiled(inline: str = "never"):
    """numba.njit, releasing the GIL, with numba's on-disk cache of the machine code where there is a
    writable place for it (the package's __pycache__ or numba's user cache folder). With neither (a
    read-only install and home), numba refuses `cache=True` at import; then each process compiles (~6 s)."""

    def compile_(function):
        try:
            return numba.njit(cache=True, nogil=True, inline=inline)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(nogil=True, inline=inline)(function)

    return compile_


@_compiled()
def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


@_compiled()
def _filter(kind: int, x: float) -> float:
    """Resample.c's five filters, operation for operation."""
    if kind == BOX:
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    if kind == LANCZOS:
        return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0
    x = abs(x)
    if kind == BILINEAR:
        return 1.0 - x if x < 1.0 else 0.0
    if kind == HAMMING:
        if x == 0.0:
            return 1.0
        if x >= 1.0:
            return 0.0
        x = x * math.pi
        return math.sin(x) / x * (_HAMMING_A + _HAMMING_B * math.cos(x))
    if x < 1.0:  # bicubic, a = -0.5
        return (1.5 * x - 2.5) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


@_compiled()
def coefficients(in_size: int, out_size: int, kind: int, support: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """precompute_coeffs + normalize_coeffs_8bpc: for each output line, its first input line, how many it
    reads, and the 22-bit taps (int32 [out_size, max taps], zeros past each line's count)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale
    first = np.empty(out_size, np.int64)
    count = np.empty(out_size, np.int64)
    taps = np.zeros((out_size, ksize), np.int32)
    weights = np.empty(ksize)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        total = 0.0
        for x in range(xmax):
            weights[x] = _filter(kind, (x + xmin - center + 0.5) * inv_filterscale)
            total += weights[x]
        for x in range(xmax):
            w = weights[x] / total if total != 0.0 else weights[x]
            taps[xx, x] = int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS))
        first[xx] = xmin
        count[xx] = xmax
    return first, count, taps


@_compiled()
def _clip8(total: int) -> np.uint8:
    value = total >> PRECISION_BITS
    return np.uint8(0 if value < 0 else (255 if value > 255 else value))


@_compiled()
def _vertical(rows: np.ndarray, first: np.ndarray, count: np.ndarray, taps: np.ndarray, lo: int, out: np.ndarray):
    """out[y, i] = Pillow's vertical sum for output row y at flat position lo + i of `rows` [H, W * bands]."""
    width = out.shape[1]
    sums = np.empty(width, np.int32)
    for y in range(out.shape[0]):
        sums[:] = _HALF
        for k in range(count[y]):
            tap = taps[y, k]
            row = rows[first[y] + k, lo : lo + width]  # a 1-D view indexed by i alone: LLVM vectorises it
            for i in range(width):
                sums[i] += np.int32(row[i]) * tap
        for i in range(width):
            out[y, i] = _clip8(sums[i])


@_compiled(inline="always")
def _planar_loops(image_rows: np.ndarray, block: np.ndarray, rows: int, bands: int, to_block: bool):
    per_band = _LANES // bands
    for x in range(image_rows.shape[1]):
        for r in range(rows):
            for c in range(bands):
                if to_block:
                    block[x, c * per_band + r] = image_rows[r, x, c]
                else:
                    image_rows[r, x, c] = block[x, c * per_band + r]


@_compiled(inline="always")
def _planar_words_loops(words: np.ndarray, block: np.ndarray, rows: int, bands: int):
    per_band = _LANES // bands
    for x in range(words.shape[1]):
        for r in range(rows):
            word = words[r, x]
            for c in range(bands):
                block[x, c * per_band + r] = np.uint8((word >> (8 * c)) & 0xFF)


@_compiled(inline="always")
def _planar(image_rows: np.ndarray, block: np.ndarray, bands: int, to_block: bool):
    """Between image rows [rows, W, >= bands] and a column-major block [W, 48] that holds each band's rows
    together (band c of row r at c * 48 / bands + r): into the block when `to_block`, back otherwise."""
    rows = image_rows.shape[0]
    # Constant loop bounds let LLVM unroll the loops: 3x faster for full blocks of RGB, greyscale and 4 bands.
    if rows == 16 and bands == 3:
        _planar_loops(image_rows, block, 16, 3, to_block)
    elif rows == 48 and bands == 1:
        _planar_loops(image_rows, block, 48, 1, to_block)
    elif rows == 12 and bands == 4:
        _planar_loops(image_rows, block, 12, 4, to_block)
    else:
        _planar_loops(image_rows, block, rows, bands, to_block)


@_compiled(inline="always")
def _planar_from_words(words: np.ndarray, block: np.ndarray, bands: int):
    """`_planar` into the block from 4-byte pixels read as one uint32 word each [rows, W] (band c is byte c,
    little-endian): a third of the loads of reading bytes, and the bytes split apart in registers."""
    rows = words.shape[0]
    if rows == 16 and bands == 3:
        _planar_words_loops(words, block, 16, 3)
    elif rows == 12 and bands == 4:
        _planar_words_loops(words, block, 12, 4)
    else:
        _planar_words_loops(words, block, rows, bands)


@_compiled()
def _horizontal(
    pixels: np.ndarray,
    words: np.ndarray,
    row_lo: int,
    first: np.ndarray,
    count: np.ndarray,
    taps: np.ndarray,
    out: np.ndarray,
):
    """out[y, x, c] = Pillow's horizontal sum for output column x of input row row_lo + y, band c, where
    `pixels` is [H, W, >= bands] and out [rows, columns, bands]. `words` is `pixels` as uint32 [H, W] where
    its pixels are 4 bytes (see `_horizontal_pass`), else empty. Blocks of rows are copied column by column into
    `block` first, so each tap adds 48 contiguous values at once, and the results go back the same way."""
    bands = out.shape[2]
    rows_per_block = _LANES // bands
    lo = first[0]
    hi = first[-1] + count[-1]
    block = np.zeros((hi - lo + 1, _LANES), np.uint8)  # one zero input column more: the last pair's second
    results = np.empty((out.shape[1], _LANES), np.uint8)
    sums = np.empty(_LANES, np.int32)
    for start in range(0, out.shape[0], rows_per_block):
        stop = min(start + rows_per_block, out.shape[0])
        if words.shape[0] > 0:
            _planar_from_words(words[row_lo + start : row_lo + stop, lo:hi], block, bands)
        else:
            _planar(pixels[row_lo + start : row_lo + stop, lo:hi], block, bands, True)
        for x in range(out.shape[1]):
            sums[:] = _HALF
            offset = first[x] - lo
            taken = count[x]
            for k in range(0, taken, 2):  # two taps a step: half the loads and stores of `sums`
                tap, next_tap = taps[x, k], (taps[x, k + 1] if k + 1 < taken else 0)
                column, next_column = block[offset + k], block[offset + k + 1]
                for i in range(_LANES):
                    sums[i] += np.int32(column[i]) * tap + np.int32(next_column[i]) * next_tap
            for i in range(_LANES):
                results[x, i] = _clip8(sums[i])
        _planar(out[start:stop], results, bands, False)


def _horizontal_pass(
    pixels: np.ndarray, row_lo: int, first: np.ndarray, count: np.ndarray, taps: np.ndarray, out: np.ndarray
) -> None:
    """`_horizontal` over `pixels`, read as uint32 words where they are 4 bytes each (an RGBX decode, Pillow's
    own memory): a third of the moves of single bytes. Other pixels go with an empty word array as writable
    as `pixels` (numba compiles for each type: this keeps to one form for read-only, one for writable)."""
    if pixels.shape[2] == 4 and pixels.strides[1:] == (4, 1) and sys.byteorder == "little":
        words = pixels.view(np.uint32)[..., 0]
    else:
        words = np.empty((0, 0), np.uint32)
        words.flags.writeable = pixels.flags.writeable
    _horizontal(pixels, words, row_lo, first, count, taps, out)


def horizontal_first(size: tuple[int, int], new_size: tuple[int, int]) -> bool:
    """Pillow 11+'s choice of pass order (ImagingResampleInner): vertical first when the height shrinks
    by more than twice as many lines as the width."""
    (width, height), (new_width, new_height) = size, new_size
    return not (height - new_height > 0 and height - new_height > (width - new_width) * 2)


def resize_and_crop(
    pixels: np.ndarray,
    bands: int,
    new_size: tuple[int, int],
    box: tuple[int, int, int, int],
    resample: int,
) -> np.ndarray:
    """Pillow's ``resize(new_size, resample).crop(box)`` of an 8-bit image, as uint8 [h, w, bands].

    `pixels` is the image as [H, W, >= bands] uint8 (Pillow's own 4-byte pixels can be passed as they are:
    only the first `bands` are read); `box` must lie inside the resized image.
    """
    height, width = pixels.shape[:2]
    (new_width, new_height), (left, top, right, bottom) = new_size, box
    if not (0 <= left < right <= new_width and 0 <= top < bottom <= new_height):
        raise ValueError(f"crop box {box} is not inside the resized image {new_size}")
    resample = int(resample)  # an Image.Resampling member would be compiled for as a type of its own
    support = FILTER_SUPPORT[resample]
    if new_width != width:
        cols = coefficients(width, new_width, resample, support)
        cols = tuple(np.ascontiguousarray(part[left:right]) for part in cols)
    if new_height != height:
        rows = coefficients(height, new_height, resample, support)
        rows = tuple(np.ascontiguousarray(part[top:bottom]) for part in rows)

    if new_height == height:  # one pass, or none
        kept = pixels[top:bottom]
        if new_width == width:
            return np.ascontiguousarray(kept[:, left:right, :bands])
        out = np.empty((bottom - top, right - left, bands), np.uint8)
        _horizontal_pass(kept, 0, *cols, out)
        return out
    if new_width == width or not horizontal_first((width, height), new_size):
        # Vertical first, over the input columns the crop's columns read (all bands, contiguous bytes).
        lo, hi = (left, right) if new_width == width else (int(cols[0][0]), int(cols[0][-1] + cols[1][-1]))
        flat = np.ascontiguousarray(pixels).reshape(height, -1)
        stride = pixels.shape[2]
        middle = np.empty((bottom - top, (hi - lo) * stride), np.uint8)
        first, count, taps = rows
        _vertical(flat, first, count, taps, lo * stride, middle)
        middle = middle.reshape(bottom - top, hi - lo, stride)
        if new_width == width:
            return np.ascontiguousarray(middle[:, :, :bands])
        out = np.empty((bottom - top, right - left, bands), np.uint8)
        _horizontal_pass(middle, 0, cols[0] - lo, cols[1], cols[2], out)
        return out
    # Horizontal first, over the input rows the crop's rows read; then vertical over the crop's columns.
    first, count, taps = rows
    lo, hi = int(first[0]), int(first[-1] + count[-1])
    middle = np.empty((hi - lo, right - left, bands), np.uint8)
    _horizontal_pass(pixels, lo, *cols, middle)
    out = np.empty((bottom - top, (right - left) * bands), np.uint8)
    _vertical(middle.reshape(hi - lo, -1), first - lo, count, taps, 0, out)
    return out.reshape(bottom - top, right - left, bands)


# ---------------------------------------------------------------------- the same on tensors, on any device

_WINDOW_ELEMENTS = 1 << 26  # values one pass gathers at once (256 MB as int32); bigger inputs go in slices


@functools.lru_cache(maxsize=512)
def _tensor_taps(
    in_size: int, out_size: int, resample: int, keep: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """Output lines keep[0]..keep[1] on `device`: (the input lines each reads, counted from the first line
    read [out, k], their taps [out, k], the input lines read). Past a line's own count its taps are zero, so
    its indices need only stay in range. Cached: a photo collection repeats a few camera sizes, and each new
    size costs small host-to-device copies."""
    first, count, taps = (
        part[keep[0] : keep[1]] for part in coefficients(in_size, out_size, resample, FILTER_SUPPORT[resample])
    )
    reads = slice(int(first[0]), int(first[-1] + count[-1]))
    index = np.minimum(first[:, None] - reads.start + np.arange(taps.shape[1]), reads.stop - reads.start - 1)
    return torch.from_numpy(index).to(device), torch.from_numpy(np.ascontiguousarray(taps)).to(device), reads


def _pass(lines: torch.Tensor, index: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """One of Pillow's passes along the last dimension of `lines` [..., rows, n] (uint8, or int32 from the
    first pass): output j of a row is clip8(sum_k taps[j, k] * row[index[j, k]]), as int32. Every output's
    window is gathered at once ([..., rows, out, k], int32 once multiplied by the taps; in slices of rows
    when that would exceed _WINDOW_ELEMENTS), so a batch of large photos is never held in int32 whole."""
    rows = max(1, _WINDOW_ELEMENTS // (math.prod(lines.shape[:-2]) * taps.numel()))
    out = []
    for part in lines.split(rows, dim=-2):
        sums = (part[..., index] * taps).sum(-1, dtype=torch.int32) + _HALF
        out.append((sums >> PRECISION_BITS).clamp_(0, 255))
    return torch.cat(out, dim=-2) if len(out) > 1 else out[0]


def _vertical_pass(lines: torch.Tensor, index: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    return _pass(lines.transpose(-1, -2), index, taps).transpose(-1, -2)


def resize_and_crop_tensor(
    pixels: torch.Tensor, new_size: tuple[int, int], box: tuple[int, int, int, int], resample: int
) -> torch.Tensor:
    """`resize_and_crop` for uint8 tensors [..., C, H, W] (a batch of same-sized images, channels first) on
    any device: Pillow's ``resize(new_size, resample).crop(box)`` of each channel, bit for bit. Integer
    arithmetic only, so no float setting (TF32, reduced-precision reductions) can change a value.

    Only the lines the crop keeps are computed, in Pillow's pass order, from the input lines they read;
    `box` must lie inside the resized image. Channels are resized independently, as Pillow does for RGB and
    greyscale (RGBA would need premultiplying first).
    """
    height, width = pixels.shape[-2:]
    (new_width, new_height), (left, top, right, bottom) = new_size, box
    if not (0 <= left < right <= new_width and 0 <= top < bottom <= new_height):
        raise ValueError(f"crop box {box} is not inside the resized image {new_size}")
    resample, device = int(resample), pixels.device
    if new_width != width:
        cols_index, cols_taps, cols_read = _tensor_taps(width, new_width, resample, (left, right), device)
    if new_height != height:
        rows_index, rows_taps, rows_read = _tensor_taps(height, new_height, resample, (top, bottom), device)

    if new_height == height:  # one pass, or none
        kept = pixels[..., top:bottom, :]
        if new_width == width:
            return kept[..., left:right]
        return _pass(kept[..., cols_read], cols_index, cols_taps).to(torch.uint8)
    if new_width == width or not horizontal_first((width, height), new_size):
        # Vertical first, over the input columns the crop's columns read; then horizontal.
        columns = slice(left, right) if new_width == width else cols_read
        middle = _vertical_pass(pixels[..., rows_read, columns], rows_index, rows_taps)
        if new_width == width:
            return middle.to(torch.uint8)
        return _pass(middle, cols_index, cols_taps).to(torch.uint8)
    # Horizontal first, over the input rows the crop's rows read; then vertical over the crop's columns.
    middle = _pass(pixels[..., rows_read, cols_read], cols_index, cols_taps)
    return _vertical_pass(middle, rows_index, rows_taps).to(torch.uint8)


# ---------------------------------------------------------------------- rescale and normalise


@_compiled()
def _lookup(pixels: np.ndarray, table: np.ndarray, out: np.ndarray):
    for n in range(pixels.shape[0]):
        for c in range(pixels.shape[3]):
            values = table[c]
            for y in range(pixels.shape[1]):
                row = pixels[n, y]
                line = out[n, c, y]
                for x in range(pixels.shape[2]):
                    line[x] = values[row[x, c]]


def lookup_channels_first(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] with out[n, c, y, x] = table[c, pixels[n, y, x, c]].
    `pixels` may be any view (a channels-first batch's, transposed, is read where it lies).

    The processor's last step (rescale and normalise) takes only 256 values per channel, so it is a table
    computed once and looked up here, in the same pass that moves channels first. It lives beside the
    resize because it is compiled and cached the same way.
    """
    out = np.empty((pixels.shape[0], pixels.shape[3], pixels.shape[1], pixels.shape[2]), np.float32)
    _lookup(pixels, np.ascontiguousarray(table, dtype=np.float32), out)
    return out
