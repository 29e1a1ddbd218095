"""Stand-in for transformers' repository script utils/fetch_hub_objects_for_ci.py (not in the sdist), which
maps a hub URL to the copy its CI downloaded beforehand. Offline there is no copy: the URL comes back
unchanged, so a test that needs a hub file fails on loading it (listed in docs/compatibility.md)."""


def url_to_local_path(url: str, return_url_if_not_found: bool = True) -> str:
    return url
