"""Exact search: every stored vector scored against the queries, one block of rows at a time.

The store streams its vectors from Lance in blocks (`EmbeddingStore.exact_top_k`); this module scores one
block and keeps the best k across blocks, so memory stays bounded at any store size.

float32 blocks are scored with one float32 matrix product. float16 blocks scored for a few queries would
cost a float32 copy first (converting 1M 512-d rows takes longer than scoring them for one query), so they
are *screened* with a float16 matrix product instead (PyTorch's float16 CPU kernels, float32
accumulation) and only the rows that can still be among the best k are rescored in float32. The
screening score of a unit vector differs from its float32 score by at most SCREEN_ERROR (the query
rounded to float16: <= 2^-11; the product rounded to float16: <= 2^-11), so every row whose screening
score is within 2 * SCREEN_ERROR of the k-th best screening score is rescored: the result equals a float32
search of the stored float16 vectors. `benchmarks/bench_store.py` (step "measure") times both. For more
than SCREEN_MAX_QUERIES queries (the recall measurement at build: up to 1,000) the float32 copy is the
cheaper of the two, so the block is copied and scored in float32 (step "screen").
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import torch

__all__ = ["BLOCK_ROWS", "SCREEN_ERROR", "TopK", "block_candidates", "stored_vectors"]

BLOCK_ROWS = 32_768  # rows per block of exact search (64 MB of float32 512-d vectors) and per Lance row group

SCREEN_ERROR = 2.0**-10 + 1e-5  # query rounding + product rounding + float32 accumulation slack
SCREEN_EXTRA = 64  # rows kept beyond k per query and block before the error bound asks for more
# Above this many queries a float32 copy of a float16 block is cheaper than screening it: a 32,768-row
# 512-d block took 21 ms screened and 26 ms copied for 8 queries, 40 and 36 ms for 16, 2.5 and 0.34 s for 1,000
# (benchmarks/bench_store.py --step screen)
SCREEN_MAX_QUERIES = 12


def stored_vectors(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed-size-list column of vectors as a [N, D] array of its own dtype (float32 or float16; no copy
    unless the column is in several chunks)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def block_candidates(
    vectors: np.ndarray, queries: np.ndarray, k: int, floor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(positions [Q, m], float32 scores [Q, m]) of the rows of `vectors` ([B, D], float32 or float16) that
    may be among each query's best k; `queries` is [Q, D] float32. m <= B; every row that belongs to a
    query's best k within this block, and scores at least `floor` ([Q]: the k-th best score found so far,
    `TopK.floor`), is among its candidates, with its float32 score."""
    if vectors.dtype == np.float16:
        if len(queries) <= SCREEN_MAX_QUERIES:
            return _screened_candidates(vectors, queries, k, floor)
        vectors = _tensor(vectors).float().numpy()  # (torch converts float16 ~10x faster than NumPy)
    scores = queries @ vectors.T
    if scores.shape[1] <= k:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape), scores
    positions = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return positions, np.take_along_axis(scores, positions, axis=1)


def _tensor(vectors: np.ndarray) -> torch.Tensor:
    """A tensor over `vectors` without a copy (Arrow's buffers are read-only; nothing here writes to them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(vectors)


def _screened_candidates(
    vectors: np.ndarray, queries: np.ndarray, k: int, floor: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    block = _tensor(vectors)
    query = torch.from_numpy(queries)
    screen = block @ query.half().T  # [B, Q] float16
    rows = screen.shape[0]
    kept = min(rows, k + SCREEN_EXTRA)
    top = torch.topk(screen, kept, dim=0)
    threshold = top.values[min(k, rows) - 1].float() - 2 * SCREEN_ERROR  # [Q]
    if floor is not None:  # a row scoring below the best k found in earlier blocks cannot enter them
        threshold = torch.maximum(threshold, torch.from_numpy(np.asarray(floor, np.float32)) - SCREEN_ERROR)
    if kept < rows and bool((top.values[-1].float() >= threshold).any()):
        # more rows than kept lie within the error bound of some query's k-th best: keep them all
        needed = int((screen.float() >= threshold).sum(dim=0).max())
        top = torch.topk(screen, needed, dim=0)
    else:
        needed = int((top.values.float() >= threshold).sum(dim=0).max())
    positions = top.indices[:needed].T.contiguous()  # [Q, m]
    candidates = block[positions.reshape(-1)].float().reshape(*positions.shape, block.shape[1])  # [Q, m, D]
    scores = torch.einsum("qmd,qd->qm", candidates, query)
    return positions.numpy(), scores.numpy()


class TopK:
    """The best k (id, score) pairs per query seen so far, over blocks of candidates."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.scores = np.full((queries, 0), -np.inf, np.float32)
        self.ids = np.zeros((queries, 0), np.int64)

    def add(self, ids: np.ndarray, scores: np.ndarray) -> None:
        """Merge candidates: `ids` and `scores` are [Q, m]."""
        all_scores = np.concatenate([self.scores, scores], axis=1)
        all_ids = np.concatenate([self.ids, ids], axis=1)
        if all_scores.shape[1] > self.k:
            keep = np.argpartition(-all_scores, self.k - 1, axis=1)[:, : self.k]
            all_scores = np.take_along_axis(all_scores, keep, axis=1)
            all_ids = np.take_along_axis(all_ids, keep, axis=1)
        self.scores, self.ids = all_scores, all_ids

    def floor(self) -> np.ndarray:
        """[Q] the k-th best score so far (-inf while fewer than k were seen): what a new row must beat."""
        if self.scores.shape[1] < self.k:
            return np.full(len(self.scores), -np.inf, np.float32)
        return self.scores.min(axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [Q, k'], scores [Q, k']), best first (k' = min(k, rows seen))."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.ids, order, axis=1), np.take_along_axis(self.scores, order, axis=1)
