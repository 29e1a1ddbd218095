"""The run folder (`output_dir`): what a run may find in it, and what it writes before the first step.

A folder that already holds a run is never overwritten silently: continue it with `resume=True`, or
start over with `overwrite=True` (which removes the earlier run's checkpoint, metrics and model).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from torchclip.distributed import Distributed, agree
from torchclip.io import write_json
from torchclip.train.checkpoint import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, find_checkpoint
from torchclip.train.config import TrainConfig
from torchclip.train.metrics import METRICS_NAME

CONFIG_FILE = "train_config.json"


def run_folder_problem(out: Path, resume: bool, overwrite: bool) -> str | None:
    """Why training cannot go into `out` as asked (None when it can): resuming needs a checkpoint,
    and a folder that already holds a run is only reused with resume or overwrite."""
    checkpoint = find_checkpoint(out)
    if resume:
        return None if checkpoint else f"--resume: no {CHECKPOINT_NAME} in {str(out)!r}"
    if (checkpoint or (out / METRICS_NAME).exists()) and not overwrite:
        held = checkpoint.name if checkpoint else METRICS_NAME
        return (
            f"{str(out)!r} already holds a run ({held}): pass --resume to continue it, "
            "or --overwrite to start it again from step 0"
        )
    return None


def clear_run(out: Path) -> None:
    """Remove what an earlier run wrote into `out` (for overwrite); other files are left alone."""
    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, METRICS_NAME):
        (out / name).unlink(missing_ok=True)
    for name in ("model", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)


def prepare_run_folder(out: Path, config: TrainConfig, env: Distributed, *, resume: bool, overwrite: bool) -> None:
    """Check `out` on rank 0 (every rank raises the same error if it cannot be used), clear it for
    `overwrite`, and write the run's config into it."""
    problem = agree(env, run_folder_problem(out, resume, overwrite) if env.main else None)
    if problem:
        raise FileExistsError(problem) if not resume else FileNotFoundError(problem)
    if env.main:
        if overwrite and not resume:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG_FILE, dataclasses.asdict(config))
