"""`torchclip serve`: an HTTP search service and a web page over an embedding store (extra: torchclip[serve]).

`create_app(ServeSettings(store=...))` returns the ASGI application; `torchclip serve STORE` runs it on uvicorn.
See docs/serve.md for the API. Names load lazily: checking an address (`check_bind`) imports no model code.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"ServeSettings": "app", "create_app": "app", "load_model_for": "app", "check_bind": "bind"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'torchclip.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"torchclip.serve.{_HOMES[name]}"), name)
