"""Weights in and out: the files of HF checkpoint folders (safetensors, sharded safetensors, `pytorch_model.bin`).

Models are built from them by `torchclip.modeling.base.PreTrainedModel`. Tensors are read one by one into
their own memory, so that with its one-at-a-time conversion (dtype, fused QKV) peak memory stays near one
copy of the weights. Pickled files are read with
`torch.load(weights_only=True)`, which refuses anything but plain tensors. Saving writes to temporary files
and renames them, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from torchclip.io import SAFE_INDEX, SAFE_WEIGHTS, TORCH_INDEX, TORCH_WEIGHTS, atomic_path, write_json

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and key."""


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"torch_dtype must be one of {sorted(DTYPES)} or 'auto', got {dtype!r}")
    return DTYPES[name]


def parse_size(size: int | str) -> int:
    """'5GB' / '500MB' / bytes -> bytes (decimal units, as transformers counts them)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", size, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size must be bytes or like '5GB' / '500MB', got {size!r}")
    unit = match.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(float(match.group(1)) * base ** {"K": 1, "M": 2, "G": 3}[unit[0]])


# ----------------------------------------------------------------------------------------------------
# Reading


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def _safetensors_file(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Read each tensor into memory of its own, in file order.

    The safetensors library maps the whole file and hands out views of the map; the model then holds
    both the file's pages (q/k/v projections included) and its fused QKV copies, about 1.3x the
    weights. Reading tensor by tensor into owned buffers keeps peak memory at one copy.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        try:
            header_size = int.from_bytes(handle.read(8), "little")
            if not 2 <= header_size <= size - 8:
                raise ValueError(f"header length {header_size} does not fit a {size}-byte file")
            header = json.loads(handle.read(header_size))
            header.pop("__metadata__", None)
            entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
            end_of_data = max((info["data_offsets"][1] for _, info in entries), default=0)
            if 8 + header_size + end_of_data > size:
                raise ValueError(f"the header describes {8 + header_size + end_of_data} bytes, the file has {size}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file (truncated or corrupt?): {exc}") from None
        for key, info in entries:
            start, end = info["data_offsets"]
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']!r}")
            # touched first: faulting the pages in from user space and then reading was faster than letting
            # read() fault them in (`torchclip bench` times loading; docs/performance.md, "Loading: one copy")
            buffer = torch.empty(end - start, dtype=torch.uint8).zero_()
            handle.seek(8 + header_size + start)
            handle.readinto(memoryview(buffer.numpy()))
            yield key, buffer.view(dtype).reshape(info["shape"])


def read_torch_file(path: Path, what: str = "PyTorch weights file") -> object:
    """What `torch.save` wrote to `path`, on the CPU (memory-mapped where the format allows), read with
    `weights_only=True`: a pickle that asks to run code is refused. Errors name the file and call it `what`."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        named = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if "Weights only load failed" not in str(exc) or not named:  # not a pickle at all, e.g. a text file
            raise CheckpointError(f"{path}: not a {what} (not what torch.save writes)") from None
        raise CheckpointError(
            f"{path}: refused to load: it holds more than plain tensors and containers (a pickle that asks to "
            f"run code: {named[0]}), and torchclip never unpickles arbitrary objects"
        ) from None
    except Exception as exc:  # garbage makes the unpickler fail in many ways (KeyError, EOFError, ...)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable {what} (truncated or not a checkpoint at all?): {type(exc).__name__}: {message}"
        ) from None


def _torch_weights(path: Path) -> dict[str, torch.Tensor]:
    state = read_torch_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensor names to tensors, got {type(state).__name__}")
    return state


def _sharded(folder: Path, index_name: str) -> list[Path]:
    index_path = folder / index_name
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index_path}: not a valid shard index ({exc!r})") from None
    files = [folder / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{index_path} names shard {file.name!r}, which is missing from {folder}")
    return files


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors first as transformers prefers them."""
    if (folder / SAFE_WEIGHTS).is_file():
        return [folder / SAFE_WEIGHTS]
    if (folder / SAFE_INDEX).is_file():
        return _sharded(folder, SAFE_INDEX)
    if (folder / TORCH_WEIGHTS).is_file():
        return [folder / TORCH_WEIGHTS]
    if (folder / TORCH_INDEX).is_file():
        return _sharded(folder, TORCH_INDEX)
    raise FileNotFoundError(
        f"no weights in {str(folder)!r}: looked for {SAFE_WEIGHTS}, {SAFE_INDEX}, {TORCH_WEIGHTS} and {TORCH_INDEX}"
    )


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, one copy in memory."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        items = _safetensors_file(path) if path.suffix == ".safetensors" else _torch_weights(path).items()
        for key, tensor in items:
            state[key] = tensor
    return state


# ----------------------------------------------------------------------------------------------------
# Writing


def save_state_dict(
    state: dict[str, torch.Tensor],
    folder: Path,
    max_shard_size: int | str = "5GB",
    metadata: dict | None = None,
) -> list[Path]:
    """Write safetensors (sharded above `max_shard_size`, with transformers' index file) atomically."""
    limit = parse_size(max_shard_size)
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():  # safetensors refuses tensors that share memory: give each its own
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > limit:
            shards.append({})
            shard_bytes = 0
        shards[-1][key] = tensor
        shard_bytes += size
    names = (
        [SAFE_WEIGHTS]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name, shard in zip(names, shards):
        with atomic_path(folder / name) as tmp:
            save_file(shard, str(tmp), metadata={"format": "pt", **(metadata or {})})
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
        }
        write_json(folder / SAFE_INDEX, index, sort_keys=True)
        names.append(SAFE_INDEX)
    for stale in [SAFE_WEIGHTS, SAFE_INDEX, *(p.name for p in folder.glob("model-*-of-*.safetensors"))]:
        if stale not in names:  # removed once the new weights are in place
            (folder / stale).unlink(missing_ok=True)
    return [folder / name for name in names]
