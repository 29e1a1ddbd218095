"""Where the service may listen: the loopback freely, anywhere else only with a token (or --insecure).

Kept apart from the application so that `torchclip serve` refuses a bad address at once, before loading a model.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["check_bind", "is_loopback"]


@functools.lru_cache(maxsize=64)  # asked for every request's Host header
def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without a token (or an explicit --insecure)."""
    if not is_loopback(host) and not token and not insecure:
        raise ValueError(
            f"refusing to listen on {host} without --token: anyone who can reach it could read the collection "
            "(pass --token T, or --insecure to accept that)"
        )
