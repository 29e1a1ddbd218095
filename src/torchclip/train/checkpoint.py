"""A training run's resumable state, in a file that loads without running code.

Run folders are often shared, and a pickle (`torch.save`'s format) runs whatever code it names when it
is loaded. The run state is therefore one safetensors file: every tensor (the weights, the optimiser's
moments, the random generators' states) as a named tensor, and everything else (the step, each data
stream's position, the optimiser's hyper-parameters) as JSON in the file's metadata. Reading it parses
a JSON header and copies bytes; nothing in the file is executed.

Runs written before this format have `checkpoint-last.pt`; those are read with
`torch.load(weights_only=True)`, which refuses any pickle that names a function or class, and such a
refusal is reported with the reason instead of being followed.

The trainer writes a run state with `save_checkpoint` (rank 0, holding every rank's data positions) and
continues from one with `resume_run`.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from torchclip.distributed import Distributed, barrier, gather
from torchclip.io import atomic_path

log = logging.getLogger("torchclip.train")

CHECKPOINT_NAME = "checkpoint-last.safetensors"
LEGACY_CHECKPOINT_NAME = "checkpoint-last.pt"
FORMAT = "torchclip-run-state"
FORMAT_VERSION = "1"


class UnsafeCheckpointError(ValueError):
    """A checkpoint that could only be loaded by running code from it, or that is not a run state at all."""


@dataclass
class RunState:
    """What `resume` needs: the step, the data positions (one list per rank), weights, optimiser, RNG."""

    step: int
    consumed_batches: int
    positions: list[list[int]]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # "cpu", "cuda" (this rank's device)


def find_checkpoint(folder: Path) -> Path | None:
    """The run's checkpoint in `folder`: the safetensors one, else a legacy `.pt`, else None."""
    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        if (folder / name).is_file():
            return folder / name
    return None


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators a training step may draw from: the CPU's and, on a GPU, that device's."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(states: dict[str, torch.Tensor], device: torch.device) -> None:
    if "cpu" in states:
        torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def save_run_state(path: Path, state: RunState) -> None:
    """Write `state` to a temporary file beside `path`, then rename: a kill leaves the old file whole."""
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.model.items():
        tensors[f"model.{name}"] = tensor
    optimizer_state: dict[str, dict[str, Any]] = {}
    for param_id, entries in state.optimizer["state"].items():
        plain = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value
            else:
                plain[key] = value
        optimizer_state[str(param_id)] = plain
    for name, tensor in state.rng.items():
        tensors[f"rng.{name}"] = tensor
    meta = {
        "step": state.step,
        "consumed_batches": state.consumed_batches,
        "positions": state.positions,
        "optimizer_state": optimizer_state,  # the non-tensor entries, and which parameters have state
        "optimizer_param_groups": state.optimizer["param_groups"],
    }
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": FORMAT_VERSION, "state": json.dumps(meta)})
    legacy = path.with_name(LEGACY_CHECKPOINT_NAME)
    if path.name == CHECKPOINT_NAME and legacy.exists():
        legacy.unlink()  # superseded: resuming must never pick the older file


def load_run_state(path: Path, device: torch.device | str = "cpu") -> RunState:
    """Read a run state written by `save_run_state` (or a legacy `.pt` one) onto `device`."""
    path = Path(path)
    if path.suffix == ".pt":
        return _load_legacy(path, device)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            meta = file.metadata() or {}
            if meta.get("format") != FORMAT:
                raise UnsafeCheckpointError(f"{path}: not a torchclip run state (no {FORMAT!r} metadata)")
            if meta.get("version") != FORMAT_VERSION:
                raise UnsafeCheckpointError(
                    f"{path}: run state version {meta.get('version')!r}; this torchclip reads {FORMAT_VERSION!r}"
                )
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
        state = json.loads(meta["state"])
    except (SafetensorError, OSError, json.JSONDecodeError, KeyError) as exc:
        raise UnsafeCheckpointError(f"{path}: damaged or not a run state ({type(exc).__name__}: {exc})") from None
    _check_fields(path, state)
    optimizer_state: dict[int, dict[str, Any]] = {}
    for param_id, plain in state["optimizer_state"].items():
        prefix = f"optimizer.{param_id}."
        entries = {name.removeprefix(prefix): t for name, t in tensors.items() if name.startswith(prefix)}
        optimizer_state[int(param_id)] = {**plain, **entries}
    groups = [
        {key: tuple(value) if isinstance(value, list) and key != "params" else value for key, value in group.items()}
        for group in state["optimizer_param_groups"]
    ]
    return RunState(
        step=state["step"],
        consumed_batches=state["consumed_batches"],
        positions=state["positions"],
        model={name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")},
        optimizer={"state": optimizer_state, "param_groups": groups},
        rng={name.removeprefix("rng."): t for name, t in tensors.items() if name.startswith("rng.")},
    )


def _check_fields(path: Path, state: Any) -> None:
    """The JSON part has the fields resuming reads, of the types it reads them as."""
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{path}: damaged run state (its JSON is not an object)")
    positions = state.get("positions")
    checks = {
        "step": isinstance(state.get("step"), int),
        "consumed_batches": isinstance(state.get("consumed_batches"), int),
        "positions": isinstance(positions, list)
        and bool(positions)
        and all(isinstance(rank, list) and all(isinstance(p, int) for p in rank) for rank in positions),
        "optimizer_state": isinstance(state.get("optimizer_state"), dict),
        "optimizer_param_groups": isinstance(state.get("optimizer_param_groups"), list),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise UnsafeCheckpointError(f"{path}: damaged run state (missing or malformed: {', '.join(bad)})")


def _load_legacy(path: Path, device: torch.device | str) -> RunState:
    """A `checkpoint-last.pt` of an older torchclip: plain containers and tensors only, or refused."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        named = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if not named:
            raise UnsafeCheckpointError(f"{path}: damaged or not a checkpoint (not what torch.save writes)") from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it is a pickle that asks to run code, not just tensors ({named[0]}). "
            "torchclip never unpickles arbitrary objects; a checkpoint torchclip wrote holds only tensors"
        ) from None
    except Exception as exc:  # garbage makes the unpickler fail in many ways (KeyError, EOFError, ...)
        raise UnsafeCheckpointError(f"{path}: damaged or not a checkpoint ({type(exc).__name__}: {exc})") from None
    expected = {"step", "consumed_batches", "positions", "model", "optimizer"}
    if not isinstance(state, dict) or not expected <= state.keys():
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UnsafeCheckpointError(f"{path}: not a torchclip run state (expected {sorted(expected)}, found {found})")
    return RunState(state["step"], state["consumed_batches"], state["positions"], state["model"], state["optimizer"])


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    consumed: int,
    positions: list[int],
    env: Distributed,
    device: torch.device,
) -> None:
    """Rank 0 writes the run's state with every rank's data positions (they differ per rank)."""
    all_positions = gather(env, list(positions))
    if env.main:
        state = RunState(step, consumed, all_positions, model.state_dict(), optimizer.state_dict(), rng_state(device))
        save_run_state(path, state)
    barrier(env)


def resume_run(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, env: Distributed, streams: int
) -> RunState:
    """Load the checkpoint in `folder` into `model` and `optimizer`; the rest of the state (step, data
    positions, random generators) is for the training loop. Refused when the run had another number of
    processes or data streams per process: its data positions would not fit."""
    path = find_checkpoint(folder) or folder / CHECKPOINT_NAME
    state = load_run_state(path)  # on the CPU: loading copies weights and moments to the device,
    # and the optimiser keeps its step counters on the CPU, as in an uninterrupted run
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    saved_world, saved_streams = len(state.positions), len(state.positions[0])
    if (saved_world, saved_streams) != (env.world_size, streams):
        raise ValueError(
            f"the checkpoint was written by {saved_world} process(es) with {saved_streams} data worker stream(s) "
            f"each; resume with the same (now {env.world_size} and {streams})"
        )
    if env.main:
        log.info("resumed from %s at step %d", path, state.step)
    return state
