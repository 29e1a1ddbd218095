"""What a run reports as it goes: `metrics.jsonl` (one JSON line per logged step), TensorBoard scalars when
`tensorboard` is installed, and the throughput between logged steps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torchclip.io import write_text_atomic

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """One JSON line per logged step, plus TensorBoard scalars when `tensorboard` is installed."""

    def __init__(self, folder: Path, enabled: bool):
        self.enabled = enabled
        self.path = folder / METRICS_NAME
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional dependency (tensorboard)

                self.board = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                pass

    def keep_until(self, step: int) -> None:
        """Drop the lines after `step` (written after the checkpoint a resumed run restarts from, and
        redone by it), and a line cut short by a kill; rewritten atomically."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line + "\n")
        write_text_atomic(self.path, "".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


class Throughput:
    """Samples per second since the last reading."""

    def __init__(self) -> None:
        self.start, self.samples = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def per_second(self) -> float:
        """The rate since the last call (or since this was made), and start counting again."""
        rate = self.samples / (time.perf_counter() - self.start)
        self.start, self.samples = time.perf_counter(), 0
        return rate
