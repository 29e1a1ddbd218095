"""Files in and out: the names of a checkpoint folder's files, writes that never leave half a file, JSON.

Every file torchclip writes goes through `atomic_path` (or `atomic_folder` for a whole folder): the new
content is written under a temporary name next to the target and renamed onto it at the end, so a crash, a
full disk or an exception part-way leaves the old file (or none), never a truncated one. A folder saved by
`save_pretrained` is atomic file by file. JSON files are read by `read_json`, whose errors name the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The files of a checkpoint folder in the HF layout (what `save_pretrained` writes and `from_pretrained` reads).
MODEL_CONFIG_FILE = "config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
IMAGE_PROCESSOR_CONFIG_FILE = "preprocessor_config.json"  # transformers 4.x
PROCESSOR_CONFIG_FILE = "processor_config.json"  # transformers 5.x: the image processor's settings inside
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
FAST_TOKENIZER_FILE = "tokenizer.json"  # the `tokenizers` library's single file


def default_file_mode(directory: bool = False) -> int:
    """The permissions an ordinary new file (0o666) or folder (0o777) gets, less the umask: temporary files
    and folders start private, and a result renamed from one should not stay so."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path next to `path` for the new file; renamed onto `path` when the block ends without
    error, removed when it raises. `durable`: also flush the file and the rename to disk (fsync), for a
    file whose loss after a power cut would lose more than the write (a store's manifest)."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())  # mkstemp makes it private
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)  # the rename itself


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, durable: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    durable: bool = False,
) -> None:
    """`data` as indented JSON with a final newline, written atomically."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n"
    write_text_atomic(path, text, durable=durable)


def read_json(path: str | os.PathLike, *, missing_ok: bool = False) -> dict[str, Any]:
    """The JSON object in `path` (`missing_ok`: {} when there is no such file); a file that is not JSON, or
    holds something other than an object, raises ValueError naming the file."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


@contextmanager
def atomic_folder(output: str | os.PathLike) -> Iterator[Path]:
    """A new folder next to `output` to fill; when the block ends without error it takes `output`'s place
    (an existing `output` is moved aside first, and put back if the swap fails), when it raises it is
    removed. Callers decide beforehand whether an existing `output` may be replaced."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        yield staging
        staging.chmod(default_file_mode(directory=True))  # mkdtemp makes it private
        if output.exists():
            previous = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old-"))
            os.replace(output, previous)
            try:
                os.replace(staging, output)
            except BaseException:
                os.replace(previous, output)
                raise
            shutil.rmtree(previous)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
