"""The live-captions page: plain static files shipped in the package (deployments/static/),
served by the ingress at ``/`` and ``/static/<name>``.  No build step, nothing from a CDN."""

from __future__ import annotations

from importlib.resources import files

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
STATIC = files("deployments") / "static"


def asset(name: str) -> tuple[bytes, str] | None:
    """A static file's bytes and media type (None: no such file); plain names only."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        return None
    path = STATIC / name
    if not path.is_file():
        return None
    return path.read_bytes(), _TYPES[suffix]
