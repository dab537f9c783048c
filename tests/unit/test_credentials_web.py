"""Where the API key is presented, and the page's static files."""

from __future__ import annotations

import re

import pytest

from deployments.auth import accepted_subprotocol, presented_key
from deployments.web import STATIC, asset


@pytest.mark.parametrize(
    ("headers", "subprotocols", "key"),
    [
        ({"authorization": "Token dg-key"}, [], "dg-key"),  # Deepgram's SDKs
        ({"authorization": "Bearer rs-key"}, [], "rs-key"),
        ({"authorization": "bearer  spaced "}, [], "spaced"),
        ({}, ["token", "page-key"], "page-key"),  # browsers: the subprotocol pair
        ({"authorization": "Basic dXNlcg=="}, [], None),
        ({}, ["token"], None),
        ({}, [], None),
    ],
)
def test_presented_key(headers: dict[str, str], subprotocols: list[str], key: str | None) -> None:
    assert presented_key(headers, subprotocols, {}) == key


def test_the_token_subprotocol_is_selected_only_when_offered() -> None:
    assert accepted_subprotocol(["token", "k"]) == "token"
    assert accepted_subprotocol([]) is None


def test_page_assets_are_served_and_nothing_else() -> None:
    found = asset("index.html")
    assert found is not None and found[1].startswith("text/html")
    for name in ("app.js", "worklet.js", "captions.js", "style.css"):
        assert asset(name) is not None, name
    for bad in ("../ingress.py", "..", ".hidden.js", "ingress.py", "missing.js", "static/app.js"):
        assert asset(bad) is None, bad


def test_the_page_loads_nothing_from_the_internet() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text), path.name
        assert "import(" not in text and "cdn" not in text.lower(), path.name
