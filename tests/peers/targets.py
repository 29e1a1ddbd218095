"""Which library the peer drivers test: torchclip (default), or with TORCHCLIP_PEERS_TARGET=transformers
transformers' own classes, to see which of the mixins' tests pass on the originals in the same setting."""

from __future__ import annotations

import importlib
import os
from typing import Any

TARGET = os.environ.get("TORCHCLIP_PEERS_TARGET", "torchclip")
if TARGET not in ("torchclip", "transformers"):
    raise ValueError(f"TORCHCLIP_PEERS_TARGET must be 'torchclip' or 'transformers', got {TARGET!r}")


def target_class(name: str) -> Any:
    """The class called `name` in the library under test."""
    return getattr(importlib.import_module(TARGET), name)
