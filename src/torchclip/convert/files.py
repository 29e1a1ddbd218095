"""Reading weights from a single checkpoint file: a TorchScript archive, a pickled dict, or safetensors.

OpenAI released its models as TorchScript archives. `torch.jit.load` does not unpickle arbitrary Python
objects, but it does run TorchScript, which is model code: load archives only from sources you trust, and
prefer plain state-dict files. Those are read with `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers, and safetensors files hold nothing but tensors. Every tensor lands on the CPU,
whatever device the file names.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from torchclip.checkpoint import CheckpointError, read_state_dict, read_torch_file
from torchclip.convert.openclip import unwrap_state_dict


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder and `constants.pkl` (torch.save zips have neither)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return any("/code/" in name or name.endswith("/constants.pkl") for name in names)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(weights, whether the file is a TorchScript archive), on the CPU, unwrapped from training checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return read_state_dict([path]), False
    if is_torchscript(path):
        try:
            with warnings.catch_warnings():  # OpenAI's releases exist only as TorchScript; nothing to act on
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning
                )
                archive = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            message = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path}: a TorchScript archive that cannot be read (corrupt?): {message}") from None
        return unwrap_state_dict(dict(archive.state_dict()), str(path)), True
    return unwrap_state_dict(read_torch_file(path, what="PyTorch checkpoint"), str(path)), False
