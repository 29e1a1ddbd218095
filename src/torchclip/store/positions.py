"""Rows by position in one version of a Lance table, read fragment by fragment.

A row's position counts the live rows of the fragments in order (deleted rows do not count), as Lance's
`take` does. Lance's dataset-level take was ~10 s a call on a 1M-row table once rows had been deleted; its
fragment-level take stays ~1 ms for 4,096 rows, so reads go through the fragments.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["Positions"]


@dataclass
class Positions:
    fragments: list[Any]  # the version's LanceFragments, in order
    offsets: np.ndarray  # [F + 1] int64: the position of each fragment's first row, then the row count
    schema: pa.Schema

    @classmethod
    def of(cls, dataset: Any) -> Positions:
        fragments = dataset.get_fragments()
        offsets = np.cumsum([0, *(fragment.count_rows() for fragment in fragments)]).astype(np.int64)
        return cls(fragments, offsets, dataset.schema)

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def take(self, positions: Sequence[int] | np.ndarray, columns: Sequence[str]) -> pa.Table:
        """The rows at these positions, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        owner = np.searchsorted(self.offsets, ordered, side="right") - 1
        parts = [
            self.fragments[f].take(ordered[owner == f] - self.offsets[f], columns=list(columns))
            for f in np.unique(owner)
        ]
        schema = pa.schema([self.schema.field(c) for c in columns])
        table = pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()
        return table.take(np.argsort(order, kind="stable")) if len(order) else table

    def ranges(self, start: int, stop: int, columns: Sequence[str]) -> Iterator[pa.Table]:
        """Rows start:stop, one table per fragment they lie in."""
        fragment = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.offsets[fragment + 1]))
            first = int(self.offsets[fragment])
            if end > start:
                yield self.fragments[fragment].take(np.arange(start - first, end - first), columns=list(columns))
            start, fragment = end, fragment + 1
