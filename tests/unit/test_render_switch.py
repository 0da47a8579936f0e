"""``SHOAL_RENDERING``: whether the API accepts ``render: true``, whatever this host has.

An API on a host of its own (no browser) in front of workers that have browsers must accept
rendered jobs (``on``); an operator must be able to refuse them where a browser is (``off``);
and by default (``auto``) this host's browser decides, as in the embedded stack.
"""

from __future__ import annotations

import sys

import pytest

from shoal.render import missing_piece
from shoal.settings import Settings, get_settings

BODY = {
    "urls": ["https://example.com/p/1"],
    "defaults": {"render": True, "formats": ["data", "screenshot"]},
}


def _set(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def test_the_switch_decides_before_the_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Settings(render_executable="/nonexistent/chromium")
    present = Settings(render_executable=sys.executable)  # "a browser" to the check
    assert "/nonexistent/chromium" in (missing_piece(missing) or "")
    assert missing_piece(present) is None
    assert missing_piece(missing.model_copy(update={"rendering": "on"})) is None
    off = missing_piece(present.model_copy(update={"rendering": "off"}))
    assert off is not None and "SHOAL_RENDERING=off" in off
    with pytest.raises(ValueError):
        Settings(rendering="sometimes")  # type: ignore[arg-type]


def test_the_api_follows_the_switch(client, alice, flow_starter, monkeypatch) -> None:
    def post():  # type: ignore[no-untyped-def]
        return client.post("/v1/jobs", headers=alice.headers, json=BODY)

    # auto, no browser here: 422 naming what to install, and no flow run
    _set(monkeypatch, SHOAL_RENDER_EXECUTABLE="/nonexistent/chromium")
    r = post()
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == "defaults.render"
    assert "/nonexistent/chromium" in r.json()["errors"][0]["msg"]
    assert not flow_starter.calls

    # on: the workers render, this host need not have a browser
    _set(monkeypatch, SHOAL_RENDERING="on")
    assert post().status_code == 202
    assert len(flow_starter.calls) == 1

    # off: refused where a browser is, naming the switch
    _set(monkeypatch, SHOAL_RENDERING="off", SHOAL_RENDER_EXECUTABLE=sys.executable)
    r = post()
    assert r.status_code == 422, r.text
    assert "SHOAL_RENDERING=off" in r.json()["errors"][0]["msg"]
    assert len(flow_starter.calls) == 1


def test_the_banner_says_whether_rendering_is_on() -> None:
    from shoal.cli import _rendering

    assert _rendering(Settings(render_executable=sys.executable)) == f"on ({sys.executable})"
    off = _rendering(Settings(render_executable="/nonexistent/chromium"))
    assert off.startswith("off: ") and "/nonexistent/chromium" in off
    workers = _rendering(Settings(render_executable="/nonexistent/chromium", rendering="on"))
    assert workers == "on (SHOAL_RENDERING=on: the workers' browsers)"
