"""Browsers for one worker process: found, launched, shared, recycled, replaced.

- ``find_browser`` names the executable or raises ``RenderUnavailable`` naming the missing
  piece (no browser, no Playwright) and the command that installs it.
- ``BrowserPool`` keeps ``render_browsers`` Chromium processes (Playwright ``launch`` on
  Debian's binary: Playwright's own browser download cannot work here). A page goes to the
  least busy browser. A browser is retired after ``render_recycle_pages`` pages or when its
  process tree's PSS passes ``render_recycle_mb`` (checked every ``_MEM_EVERY`` pages), and
  closed once its last page is; one that disconnects (crashed, killed) is dropped at once and
  the next page launches a fresh one.
- Launch flags: Playwright's own set (``--no-sandbox`` unless asked, background networking,
  component updates and sync off, ``--headless``) plus ``--disable-quic`` (UDP would bypass
  the guard proxy), WebRTC limited to proxied TCP (``disable_non_proxied_udp``), a V8 heap cap
  per page (``--js-flags=--max-old-space-size``: a page that allocates without end crashes its
  own tab instead of growing the worker), and a marker to find the process tree in ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.errors import RenderUnavailable

from . import _procmem

if TYPE_CHECKING:
    from playwright.async_api import Browser, Playwright

    from shoal.settings import Settings

#: where Debian's packages put the browser, best first (the headless shell is the
#: purpose-built one: no GPU process, no UI, 20-30 % less memory per page than ``chromium``)
CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = (
    "install Debian's headless Chromium (as root: `apt-get install -y chromium-headless-shell`, "
    "which `make setup` does) or set SHOAL_RENDER_EXECUTABLE"
)
_MEM_EVERY = 25
EXTRA_ARGS = (
    "--disable-quic",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--mute-audio",
)


def find_browser(settings: Settings) -> str:
    """The Chromium executable to render with; ``RenderUnavailable`` naming what is missing."""
    try:
        import playwright  # noqa: F401
    except ImportError as exc:
        raise RenderUnavailable(
            "rendering needs Playwright for Python (`pip install playwright`, declared in "
            "pyproject.toml: `make test` installs it)"
        ) from exc
    if settings.render_executable:
        path = shutil.which(settings.render_executable) or settings.render_executable
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RenderUnavailable(
                f"SHOAL_RENDER_EXECUTABLE={settings.render_executable!r} is not an executable"
            )
        return path
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return _unwrap(found)
    raise RenderUnavailable(f"no browser to render with on this worker: {INSTALL_HINT}")


def _unwrap(path: str) -> str:
    """Debian's ``/usr/bin/chromium-headless-shell`` is a shell script that runs
    ``/usr/lib/chromium/<name>`` without ``exec``: launch the binary itself, so closing the
    browser ends it rather than the wrapper."""
    real = os.path.join("/usr/lib/chromium", os.path.basename(path))
    with contextlib.suppress(OSError):
        head = open(path, "rb").read(2)  # noqa: SIM115
        if head == b"#!" and os.access(real, os.X_OK):
            return real
    return path


@dataclass(eq=False)
class PooledBrowser:
    """One browser and its bookkeeping."""

    browser: Browser
    marker: str
    open_pages: int = 0
    pages: int = 0
    retiring: bool = False
    dead: bool = False
    pid: int | None = None
    #: Chromium's own User-Agent (``HeadlessChrome/...``), asked once at launch
    user_agent: str = ""
    died: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def memory_bytes(self) -> int:
        if self.pid is None:
            self.pid = _procmem.find_pid(self.marker)
        return _procmem.tree_pss_bytes(self.pid)


class BrowserPool:
    """See the module docstring. One per process (``Renderer`` owns it); not thread-safe."""

    def __init__(self, settings: Settings, executable: str, *, launch_proxy: str) -> None:
        self._settings = settings
        self.executable = executable
        self._launch_proxy = launch_proxy
        self._pw: Playwright | None = None
        self._pw_cm: Any = None
        self._browsers: list[PooledBrowser] = []
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self.launched = 0
        self.recycled = 0
        self.crashed = 0

    @property
    def browsers(self) -> list[PooledBrowser]:
        return list(self._browsers)

    async def acquire(self) -> PooledBrowser:
        """A live browser for one more page (launched if needed); pair with ``release``."""
        async with self._lock:
            live = [b for b in self._browsers if not (b.retiring or b.dead)]
            if len(live) < self._settings.render_browsers:
                live.append(await self._launch())
            chosen = min(live, key=lambda b: b.open_pages)
            chosen.open_pages += 1
            return chosen

    async def warm(self) -> None:
        """Launch the first browser now (``RenderUnavailable`` if it cannot start)."""
        async with self._lock:
            if not any(not (b.retiring or b.dead) for b in self._browsers):
                await self._launch()

    def release(self, pooled: PooledBrowser, *, broken: bool = False) -> None:
        """One page of ``pooled`` is closed; ``broken``: the browser misbehaved, replace it."""
        pooled.open_pages -= 1
        pooled.pages += 1
        if broken and not pooled.retiring:
            pooled.retiring = True
            self.crashed += 1
        elif pooled.pages >= self._settings.render_recycle_pages and not pooled.retiring:
            pooled.retiring = True
            self.recycled += 1
        elif pooled.pages % _MEM_EVERY == 0 and not pooled.retiring:
            self._spawn(self.check_memory(pooled))
        if (pooled.retiring or pooled.dead) and pooled.open_pages == 0:
            self._spawn(self._close(pooled))

    async def aclose(self) -> None:
        for pooled in list(self._browsers):
            await self._close(pooled)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._pw_cm is not None:
            with contextlib.suppress(Exception):
                await self._pw_cm.__aexit__(None, None, None)
            self._pw_cm = self._pw = None

    # ------------------------------------------------------------------ internals
    async def _launch(self) -> PooledBrowser:
        if self._pw is None:
            from playwright.async_api import async_playwright

            self._pw_cm = async_playwright()
            self._pw = await self._pw_cm.__aenter__()
        marker = f"--shoal-render={uuid.uuid4().hex}"
        heap = f"--js-flags=--max-old-space-size={self._settings.render_js_heap_mb}"
        try:
            browser = await self._pw.chromium.launch(
                executable_path=self.executable,
                headless=True,
                args=[*EXTRA_ARGS, heap, marker],
                # anything outside the per-page contexts still meets the guard
                proxy={"server": self._launch_proxy},
                timeout=30_000,
            )
        except Exception as exc:
            raise RenderUnavailable(
                f"the browser {self.executable} did not start: {str(exc).splitlines()[0]}"
            ) from exc
        pooled = PooledBrowser(browser, marker)
        try:
            session = await browser.new_browser_cdp_session()
            pooled.user_agent = (await session.send("Browser.getVersion"))["userAgent"]
            await session.detach()
        except Exception as exc:
            await browser.close()
            raise RenderUnavailable(
                f"the browser {self.executable} does not say its User-Agent: {exc}"
            ) from exc
        browser.on("disconnected", lambda _: self._gone(pooled))
        self._browsers.append(pooled)
        self.launched += 1
        return pooled

    def _gone(self, pooled: PooledBrowser) -> None:
        if not pooled.died.done():
            pooled.died.set_result("the browser died")
        if not pooled.dead:
            pooled.dead = True
            if not pooled.retiring:
                self.crashed += 1
        with contextlib.suppress(ValueError):
            self._browsers.remove(pooled)

    async def check_memory(self, pooled: PooledBrowser) -> None:
        """Retire ``pooled`` if its process tree's PSS is over ``render_recycle_mb``."""
        used = await asyncio.to_thread(pooled.memory_bytes)
        if used > self._settings.render_recycle_mb * 1024 * 1024 and not pooled.retiring:
            pooled.retiring = True
            self.recycled += 1
            if pooled.open_pages == 0:
                await self._close(pooled)

    async def _close(self, pooled: PooledBrowser) -> None:
        with contextlib.suppress(ValueError):
            self._browsers.remove(pooled)
        pooled.dead = True
        try:
            await asyncio.wait_for(pooled.browser.close(), 10)
        except Exception:
            self._kill(pooled)

    def _kill(self, pooled: PooledBrowser) -> None:
        """A browser that would not close: end its whole process tree."""
        pid = pooled.pid or _procmem.find_pid(pooled.marker)
        if pid is not None:
            for child in reversed(_procmem.tree(pid)):
                with contextlib.suppress(OSError):
                    os.kill(child, 9)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
