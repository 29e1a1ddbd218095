"""Runs transformers' own common test mixins against torchclip (see mixins.py for where they come from).

Only this project's code redirects anything: the drivers (`test_peer_*.py`) name torchclip's classes where
transformers' CLIP tests name transformers' ones, and point the hub ids they would download at local
folders; the mixins' assertions are untouched. Without transformers VERSION installed, or without the sdist
(no registry), every peer test is skipped with the reason: nothing is counted as passed.

`make test` runs the subset in DEFAULT_SUBSET (small configs, ~1 minute); `make test-peers`
(`scripts/peer_tests.py`, or TORCHCLIP_PEERS=all) runs all of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mixins import VERSION, prepare  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import transformers

    PROBLEM = None if transformers.__version__ == VERSION else f"needs transformers=={VERSION}"
except ImportError:
    PROBLEM = f"needs transformers=={VERSION} (not installed)"
if PROBLEM is None:
    try:
        sys.path.insert(0, str(prepare()))
    except (RuntimeError, OSError) as exc:
        PROBLEM = f"transformers {VERSION} sdist not available: {exc}"

if PROBLEM is not None:
    collect_ignore_glob = ["test_peer_*.py"]

# Test names (substrings of the node id) run by the default `make test`.
DEFAULT_SUBSET = (
    "test_peer_modeling.py::CLIPTextModelTest::test_config",
    "test_peer_modeling.py::CLIPModelTest::test_config",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TORCHCLIP_PEERS") == "all":
        return
    selected, deselected = [], []
    for item in items:
        in_peers = Path(str(item.fspath)).parent == Path(__file__).parent
        (deselected if in_peers and not any(s in item.nodeid for s in DEFAULT_SUBSET) else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_configure(config: pytest.Config) -> None:
    """The markers transformers' own pytest configuration registers."""
    for marker in ("flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test",
                   "torch_export_test", "generate", "is_training_test", "is_tensor_parallel_test",
                   "is_pipeline_test", "is_staging_test", "accelerate_tests", "not_device_test",
                   "training_ci", "bitsandbytes", "flax", "agent_tests"):  # fmt: skip
        config.addinivalue_line("markers", f"{marker}: a transformers test marker")
