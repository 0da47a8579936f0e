"""Rendering pages in a real headless Chromium, behind the fetch engine's network guard.

    async with Renderer(get_settings()) as renderer:
        page = await renderer.render(url, wait_for={"selector": ".price"}, deadline_s=30,
                                     screenshot="viewport", proxy=None, headers={...},
                                     allow_navigation=engine.navigation_check(options))
        page.html, page.final_url, page.status, page.screenshot_png

``missing_piece(settings)`` says, without starting anything, why rendering cannot run on this
host (None when it can): the API answers ``render: true`` with 422 naming it. How the guard
covers every request a page makes: ``_socks``; the pool of browsers: ``_pool``; one render:
``_renderer``; where headers go, the User-Agent, and the check of each navigation
(robots.txt, through a callback: this package imports no engine): ``_requests``. Playwright
loads on first use, so importing this package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.errors import RenderUnavailable

from ._models import DEFAULT_BLOCK, RESOURCE_TYPES, Rendered, Screenshot, WaitFor

if TYPE_CHECKING:
    from shoal.settings import Settings

    from ._renderer import Renderer

__all__ = [
    "DEFAULT_BLOCK",
    "RESOURCE_TYPES",
    "RenderUnavailable",
    "Rendered",
    "Renderer",
    "Screenshot",
    "WaitFor",
    "find_browser",
    "missing_piece",
]


def find_browser(settings: Settings) -> str:
    """The Chromium executable rendering uses; ``RenderUnavailable`` naming what is missing."""
    from ._pool import find_browser as find

    return find(settings)


def missing_piece(settings: Settings) -> str | None:
    """Why the API refuses ``render: true`` (what to install, or the operator's switch), or
    None when it accepts it. ``SHOAL_RENDERING``: ``auto`` looks for a browser on this host,
    which stands for the workers' in the embedded stack (one host); ``on`` accepts without
    looking, for an API on a host of its own whose workers have browsers (a worker without one
    answers its rendered URLs with ``render_failed`` rows naming what it lacks); ``off``
    refuses."""
    if settings.rendering == "off":
        return "the operator turned rendering off on this service (SHOAL_RENDERING=off)"
    if settings.rendering == "on":
        return None
    try:
        find_browser(settings)
    except RenderUnavailable as exc:
        return exc.detail
    return None


def __getattr__(name: str) -> Any:
    if name == "Renderer":
        from ._renderer import Renderer

        globals()["Renderer"] = Renderer
        return Renderer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
