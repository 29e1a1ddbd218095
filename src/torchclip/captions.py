"""Caption tables: which column of a CSV/TSV file with a header holds the captions, for every reader of
such files (training pairs, `torchclip eval --task retrieval`, caption stores)."""

from __future__ import annotations

from collections.abc import Sequence

CAPTION_COLUMNS = ("caption", "text", "title", "label")


def first_column(header: Sequence[str], names: Sequence[str]) -> int | None:
    """The index in `header` (lower-cased cells) of the first of `names` it has, or None."""
    return next((header.index(name) for name in names if name in header), None)
