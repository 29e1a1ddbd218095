"""Pictures of CLIP's answers: the image-text similarity heat map of the paper's notebook, and a grid of
search results. Needs matplotlib (`pip install 'torchclip[plot]'`); figures are drawn without touching
pyplot's global state, and written at exactly the requested pixel size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from torchclip.display import printable, shorten

__all__ = ["search_grid", "similarity_heatmap"]

DPI = 100
MAX_SIDE = 16_000  # pixels; larger figures exhaust memory in the renderer (a 100000x100000 plot is 40 GB)


def _figure(width: int, height: int) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional dependency (plot)
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency (plot)
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'torchclip[plot]' (or matplotlib)") from None
    if width < 50 or height < 50:
        raise ValueError(f"a plot needs at least 50x50 pixels, got {width}x{height}")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ValueError(f"a plot can be at most {MAX_SIDE}x{MAX_SIDE} pixels, got {width}x{height}")
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _thumbnail(image: Image.Image | str | os.PathLike, side: int = 224) -> Image.Image:
    """An upright RGB copy, fitted into side x side (the notebook shows the originals, scaled)."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    image = image.convert("RGB")
    image.thumbnail((side, side))
    return image


def _save(figure: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")  # never bbox_inches="tight": it would change the size
    return path


def similarity_heatmap(
    images: Sequence[Image.Image | str | os.PathLike],
    texts: Sequence[str],
    similarity: np.ndarray,
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    title: str = "Cosine similarity between text and image features",
) -> Path:
    """The texts x images cosine-similarity matrix as a heat map, with the images as thumbnails above
    their columns and the texts as row labels, each cell printed (as in CLIP's notebook). `size`:
    (width, height) in pixels, default growing with the number of images and texts."""
    similarity = np.asarray(similarity, dtype=np.float32)
    if similarity.shape != (len(texts), len(images)):
        raise ValueError(f"similarity must be [texts, images] = [{len(texts)}, {len(images)}], got {similarity.shape}")
    width, height = size or (int(DPI * (3 + 1.3 * len(images))), int(DPI * (2.5 + 0.6 * len(texts))))
    figure = _figure(width, height)
    axes = figure.add_axes((0.25, 0.03, 0.72, 0.88))
    low, high = float(similarity.min()), float(similarity.max())
    axes.imshow(similarity, vmin=low, vmax=high if high > low else low + 1e-6, cmap="viridis")
    axes.set_yticks(range(len(texts)), [shorten(printable(t), 40) for t in texts])
    axes.set_xticks([])
    for i, image in enumerate(images):
        thumbnail = _thumbnail(image)
        # the y axis points down (row 0 on top), so the extent's "bottom" is the larger y: row 0 of the
        # thumbnail is drawn at its top; its box keeps the picture's aspect ratio within the 1x1 cell
        scale = 0.96 / max(thumbnail.size)
        half_w, half_h = thumbnail.width * scale / 2, thumbnail.height * scale / 2
        centre_y = -1.1
        axes.imshow(thumbnail, extent=(i - half_w, i + half_w, centre_y + half_h, centre_y - half_h), origin="upper")
    for x in range(similarity.shape[1]):
        for y in range(similarity.shape[0]):
            axes.text(x, y, f"{similarity[y, x]:.2f}", ha="center", va="center", color="white", size=9)
    for side in ("left", "top", "right", "bottom"):
        axes.spines[side].set_visible(False)
    axes.set_xlim(-0.5, len(images) - 0.5)
    axes.set_ylim(len(texts) - 0.5, -1.7)
    axes.set_title(title)
    return _save(figure, path)


def search_grid(
    results: Sequence[tuple[Image.Image | str | os.PathLike, str]],
    path: str | os.PathLike,
    columns: int = 5,
    size: tuple[int, int] | None = None,
    title: str = "",
) -> Path:
    """The images of search results in a grid, best first, each captioned (e.g. with its score and name).
    `size`: (width, height) in pixels, default 220 per cell."""
    if not results:
        raise ValueError("no search results to plot")
    columns = max(1, min(columns, len(results)))
    rows = -(-len(results) // columns)
    width, height = size or (220 * columns, 240 * rows + (40 if title else 0))
    figure = _figure(width, height)
    top = 1 - (40 / height if title else 0)
    for n, (image, caption) in enumerate(results):
        row, column = divmod(n, columns)
        axes = figure.add_axes(
            (column / columns + 0.01, top - (row + 1) * top / rows + 0.06 / rows, 0.98 / columns, 0.8 * top / rows)
        )
        axes.imshow(_thumbnail(image))
        axes.set_axis_off()
        axes.set_title(printable(caption), fontsize=8)
    if title:
        figure.suptitle(printable(title))
    return _save(figure, path)
