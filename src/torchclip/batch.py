"""The dict that tokenizers and image processors return: keys splat into a model, values convert."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class BatchFeature(dict):
    """A dict with attribute access and `.to(device)`, like transformers' `BatchFeature`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """Move every tensor value (device and/or dtype); integer tensors keep their dtype."""
        moved = {}
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                if value.is_floating_point():
                    value = value.to(*args, **kwargs)
                else:
                    device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)), None))
                    value = value.to(device) if device is not None else value
            moved[key] = value
        return type(self)(moved)


def convert_to_tensors(value: Any, return_tensors: str | None) -> Any:
    """Turn a (nested) list or array into the requested tensor type: 'pt', 'np' or None (lists)."""
    if return_tensors is None:
        return value
    if return_tensors == "pt":
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if return_tensors == "np":
        return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
