"""transformers' own common test mixins, taken from the pinned source distribution on the package registry.

`prepare()` runs `pip download --no-binary :all: --no-deps transformers==VERSION` once into a cache folder,
extracts the sdist's `tests/*.py` (the common mixins: models, configs, tokenizers, image processors,
processors) unchanged into the package `transformers_tests` there, and adds this folder's `standins/`:
modules and a fixture that the mixins import but the sdist does not ship (see standins/README.md). The
sdist carries no `tests/models/clip/`: the CLIP-specific drivers are this project's (`test_peer_*.py`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "5.24.0"
PACKAGE = "transformers_tests"
STANDINS = Path(__file__).parent / "standins"
REPO_UTILS = Path(__file__).parent / "repo_utils"  # the mixins add <their parent>/utils to sys.path


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchclip" / "peers"
    return Path(os.environ.get("TORCHCLIP_PEER_CACHE", default)) / VERSION


def _download_sdist(folder: Path) -> Path:
    found = sorted(folder.glob(f"transformers-{VERSION}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
               "--no-build-isolation", f"transformers=={VERSION}", "-d", str(folder)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    found = sorted(folder.glob(f"transformers-{VERSION}.tar.gz"))
    if result.returncode != 0 and not found:
        raise RuntimeError(f"pip download of transformers=={VERSION} failed:\n{result.stderr[-2000:]}")
    return found[0]


def prepare() -> Path:
    """The folder to put on sys.path, holding the package `transformers_tests` (made once, then reused)."""
    root = cache_root()
    package = root / PACKAGE
    marker = package / ".complete"
    if marker.is_file() and marker.read_text() == _standins_stamp():
        return root
    sdist = _download_sdist(root / "sdist")
    staging = root / f".{PACKAGE}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    prefix = f"transformers-{VERSION}/tests/"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            relative = member.name.removeprefix(prefix)
            if member.name.startswith(prefix) and member.isfile() and "/" not in relative:
                (staging / relative).write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
    if not (staging / "test_modeling_common.py").is_file():
        raise RuntimeError(f"{sdist} has no tests/test_modeling_common.py")
    shutil.copytree(STANDINS, staging, dirs_exist_ok=True)
    (staging / "__init__.py").touch()
    (staging / ".complete").write_text(_standins_stamp())
    shutil.rmtree(package, ignore_errors=True)
    os.replace(staging, package)
    shutil.copytree(REPO_UTILS, root / "utils", dirs_exist_ok=True)
    return root


def _standins_stamp() -> str:
    """Changes whenever a stand-in changes, so the cache is rebuilt."""
    files = sorted(p for folder in (STANDINS, REPO_UTILS) for p in folder.rglob("*.py") if p.is_file())
    files += sorted(STANDINS.rglob("*.txt"))
    return "\n".join(f"{p.name} {p.stat().st_size} {int(p.stat().st_mtime)}" for p in files)
