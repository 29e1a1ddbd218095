"""`torchclip serve`: an HTTP search service and a web page over an embedding store (extra: torchclip[serve]).

`create_app(ServeSettings(store=...))` returns the ASGI application; `torchclip serve STORE` runs it on uvicorn.
See docs/serve.md for the API.
"""

from torchclip.serve.app import ServeSettings, check_bind, create_app, load_model_for

__all__ = ["ServeSettings", "check_bind", "create_app", "load_model_for"]
