"""Where a checkpoint lives: a local folder, a model-hub id, or the model bundled with torchclip.

Hub ids resolve through `huggingface_hub` when it is installed (online, or from its cache when
offline). torchclip never needs the hub: a local folder always works.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHT_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.bin", "*.md"]


def bundled_model_path() -> Path:
    """The small CLIP trained by this project, shipped inside the package (see its model card): the
    default model of every `torchclip` command and of `torchclip.pipeline`."""
    return Path(__file__).resolve().parent / "data" / "default_model"


def resolve_folder(name_or_path: str | os.PathLike, *, what: str = "checkpoint") -> Path:
    """Return a local folder for `name_or_path`, downloading (or reading the hub cache) for a hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} path {str(path)!r} is a file; expected a folder (HF checkpoint layout)")
    text = str(name_or_path)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"{what} folder {text!r} does not exist")
    try:
        from huggingface_hub import snapshot_download  # noqa: PLC0415 - optional dependency (hub)
    except ImportError:
        raise FileNotFoundError(
            f"{what} {text!r} is not a local folder, and it looks like a model-hub id, but huggingface_hub "
            "is not installed to resolve it (pip install huggingface_hub), or pass a local folder"
        ) from None
    errors = []
    for local_only in (True, False):
        try:
            return Path(snapshot_download(text, allow_patterns=WEIGHT_PATTERNS, local_files_only=local_only))
        except Exception as exc:  # hub errors come in many types; report them all together
            errors.append(f"{'cache' if local_only else 'download'}: {type(exc).__name__}: {exc}")
    raise FileNotFoundError(
        f"{what} {text!r} is not a local folder and could not be resolved as a model-hub id "
        f"(looked in the huggingface_hub cache and online): " + " | ".join(errors)
    )
