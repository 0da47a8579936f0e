"""A site for the renderer: pages whose price only script puts in, and hostile pages.

    site = RenderSite().start()        # http://127.0.0.1:PORT ; site.hits["/api/price"]
    site.url("/timer")                 # or through a name the test's resolver maps to 127.0.0.1

Every page shows its price as ``<span class="price">PRICE</span>`` (``PRICE``, ``"19.99"``) only
when its script has run; the served HTML holds ``<span class="price"></span>``.

- ``/timer?ms=300`` the price after a ``setTimeout`` of ``ms``; ``/xhr`` after
  ``fetch("/api/price")`` (answered after 100 ms); ``/scroll`` a tall page that writes the
  price on its first ``scroll`` event; ``/plain`` the price in the HTML itself (no script)
- ``/never-idle`` the price at once, then a request to ``/api/tick`` every 100 ms forever
- ``/loop`` ``while (true) {}`` in an inline script before the price
- ``/dialogs`` ``alert``, ``confirm``, ``prompt`` (each blocks the script until answered), then
  ``window.open("/popup")`` twice; the price only once both popups are closed; ``/popup``
- ``/oom`` allocates until the renderer's V8 heap is exhausted (the tab crashes)
- ``/huge?n=100000`` ``n`` ``<div class="item">`` elements, the price in the last one
- ``/images`` the price by script, plus an image, a font and a video (``/img.png``,
  ``/font.woff2``, ``/video.mp4``) whose hits show what was blocked
- ``/download`` an attachment (``Content-Disposition``); ``/redirect?to=URL`` a 302
- ``/ssrf?targets=URL,URL&ws=URL`` the price, after trying every target with ``fetch``, an
  ``<img>``, an ``<iframe>``, a ``/redirect`` through this site, and a websocket to ``ws``;
  the page writes ``data-done`` on ``<body>`` when every attempt has settled
- ``/state`` shows the cookie and ``localStorage`` it finds (``none|none`` in a fresh
  context), then sets both
- ``/js-redirect?to=URL`` sends the browser to ``URL`` (default ``/plain``) from its ``load``
  handler; ``/meta-refresh?to=URL`` by ``<meta http-equiv=refresh>``;
  ``/hostile-globals`` the price, then ``scrollTo`` and ``requestAnimationFrame`` broken
- ``/tall`` the price at once on a tall page (red viewport, blue below); its first ``scroll``
  event writes ``data-scrolled`` on ``<body>``
- ``/headers`` the request headers as JSON; ``/requests?other=ORIGIN`` puts what ``/headers``
  answered its ``fetch()`` into ``<pre id="xhr">``, then loads ``/app.js`` (a script), and from
  ``ORIGIN`` an image, a script and a ``fetch()``, then writes the price (``navigator.userAgent``
  into ``<pre id="ua">``)
- ``/robots.txt`` disallows ``/private`` to every agent; ``/private/...`` a page with the price

``hits`` counts requests by path; ``log`` keeps (method, path?query, headers).
"""

from __future__ import annotations

import collections
import contextlib
import html
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PRICE = "19.99"

_HEAD = "<!doctype html><html><head><meta charset=utf-8><title>{title}</title></head><body>"
_PRICE = '<span class="price"></span>'
_SET = f'document.querySelector(".price").textContent = "{PRICE}";'


def _requests_page(other: str) -> str:
    o = json.dumps(other)
    script = (
        "const load = (tag, src) => new Promise(r => { const e = document.createElement(tag); "
        "e.onload = e.onerror = r; e.src = src; document.body.appendChild(e); });"
        "(async () => {"
        "const seen = await fetch('/headers?xhr').then(r => r.text());"
        "document.getElementById('xhr').textContent = seen;"
        "await load('script', '/app.js');"
        f"await load('img', {o} + '/headers?img'); await load('script', {o} + '/headers?js');"
        f"await fetch({o} + '/headers?fetch', {{mode: 'no-cors'}}).catch(() => null);"
        "document.getElementById('ua').textContent = navigator.userAgent;"
        f"{_SET} }})();"
    )
    return _page("requests", body='<pre id="xhr"></pre><pre id="ua"></pre>', script=script)


def _page(title: str, body: str = "", script: str = "") -> str:
    html = _HEAD.format(title=title) + f"<h1>{title}</h1>{_PRICE}{body}"
    if script:
        html += f"<script>{script}</script>"
    return html + "</body></html>"


def _ssrf_page(targets: list[str], ws: str | None) -> str:
    attempts = []
    for t in targets:
        attempts.append(f"fetch({json.dumps(t)}).then(r => r.text()).catch(() => null)")
        attempts.append(
            f"fetch('/redirect?to=' + encodeURIComponent({json.dumps(t)})).catch(() => null)"
        )
        attempts.append(
            "new Promise(r => { const i = new Image(); i.onload = i.onerror = r; "
            f"i.src = {json.dumps(t)}; }})"
        )
        attempts.append(
            "new Promise(r => { const f = document.createElement('iframe'); "
            f"f.onload = f.onerror = r; f.src = {json.dumps(t)}; "
            "document.body.appendChild(f); setTimeout(r, 1500); })"
        )
    if ws:
        attempts.append(
            "new Promise(r => { const s = new WebSocket("
            f"{json.dumps(ws)}); s.onopen = () => {{ s.send('hello'); r(); }}; "
            "s.onerror = s.onclose = r; })"
        )
    script = (
        f"Promise.allSettled([{', '.join(attempts)}]).then(() => {{ {_SET} "
        "document.body.setAttribute('data-done', '1'); });"
    )
    return _page("ssrf", script=script)


PAGES: dict[str, str] = {
    "/plain": _page("plain").replace(_PRICE, f'<span class="price">{PRICE}</span>'),
    "/tall": _page(
        "tall",
        body='<div style="height: 800px; background: #c00"></div>'
        '<div style="height: 5000px; background: #00c"></div>',
        script=f"{_SET} window.addEventListener('scroll', "
        "() => { document.body.dataset.scrolled = '1'; }, { once: true });",
    ),
    "/xhr": _page(
        "xhr",
        script="fetch('/api/price').then(r => r.json()).then(d => "
        "{ document.querySelector('.price').textContent = d.price; });",
    ),
    "/scroll": _page(
        "scroll",
        body='<div style="height: 5000px"></div><p id="end">end</p>',
        script=f"window.addEventListener('scroll', () => {{ {_SET} }}, {{ once: true }});",
    ),
    "/never-idle": _page(
        "never idle",
        script=f"{_SET} setInterval(() => fetch('/api/tick?' + Date.now()), 100);",
    ),
    "/loop": _page("loop", script=f"while (true) {{}} {_SET}"),
    "/dialogs": _page(
        "dialogs",
        script="alert('a'); confirm('b'); prompt('c'); "
        "const pops = [window.open('/popup'), window.open('/popup', '_blank')]; "
        f"const t = setInterval(() => {{ if (pops.every(w => !w || w.closed)) {{ {_SET} "
        "clearInterval(t); } }, 20);",
    ),
    "/popup": _page("popup"),
    "/hostile-globals": _page(
        "hostile globals",
        script=f"{_SET} window.scrollTo = null; window.requestAnimationFrame = null;",
    ),
    "/state": _page(
        "state",
        script="const seen = (document.cookie || 'none') + '|' + "
        "(localStorage.getItem('k') || 'none'); document.cookie = 'k=1; max-age=3600'; "
        "localStorage.setItem('k', '1'); document.querySelector('.price').textContent = seen;",
    ),
    "/oom": _page(
        "oom",
        script="const keep = []; for (;;) { keep.push(new Array(1e6).fill(keep.length)); }",
    ),
    "/images": _page(
        "images",
        body='<img src="/img.png"><video src="/video.mp4" autoplay muted></video>'
        "<style>@font-face { font-family: F; src: url(/font.woff2); } "
        "h1 { font-family: F; }</style>",
        script=_SET,
    ),
}


class RenderSite:
    """See the module docstring."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                site._record(self)
                site._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RenderSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits[urlsplit(handler.path).path] += 1
            self.log.append((handler.command, handler.path, dict(handler.headers.items())))

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query)
        path = parts.path
        if path in PAGES:
            return _send(h, 200, PAGES[path])
        if path == "/js-redirect":
            to = json.dumps(query.get("to", ["/plain"])[0])
            script = f"window.addEventListener('load', () => {{ location.href = {to}; }});"
            return _send(h, 200, _page("js redirect", script=script))
        if path == "/meta-refresh":
            to = html.escape(query.get("to", ["/plain"])[0])
            refresh = f'<meta http-equiv="refresh" content="0; url={to}">'
            return _send(h, 200, _page("meta refresh").replace("</title>", "</title>" + refresh))
        if path == "/requests":
            return _send(h, 200, _requests_page(query.get("other", [""])[0]))
        if path == "/app.js":
            return _send(h, 200, "window.appLoaded = true;", "text/javascript")
        if path == "/robots.txt":
            return _send(h, 200, "User-agent: *\nDisallow: /private\n", "text/plain")
        if path.startswith("/private"):
            return _send(h, 200, PAGES["/plain"])
        if path == "/timer":
            ms = int(query.get("ms", ["300"])[0])
            return _send(h, 200, _page("timer", script=f"setTimeout(() => {{ {_SET} }}, {ms});"))
        if path == "/api/price":
            time.sleep(0.1)
            return _send(h, 200, json.dumps({"price": PRICE}), "application/json")
        if path == "/api/tick":
            return _send(h, 200, "{}", "application/json")
        if path == "/huge":
            n = int(query.get("n", ["100000"])[0])
            items = "".join(f'<div class="item">{i}</div>' for i in range(n - 1))
            last = f'<div class="item"><span class="price">{PRICE}</span></div>'
            return _send(h, 200, _HEAD.format(title="huge") + items + last + "</body></html>")
        if path == "/ssrf":
            targets = [t for t in query.get("targets", [""])[0].split(",") if t]
            return _send(h, 200, _ssrf_page(targets, query.get("ws", [None])[0]))
        if path == "/redirect":
            h.send_response(302)
            h.send_header("Location", query.get("to", ["/plain"])[0])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if path == "/download":
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Disposition", 'attachment; filename="prices.bin"')
            h.send_header("Content-Length", "4")
            h.end_headers()
            h.wfile.write(b"\x00\x01\x02\x03")
            return None
        if path == "/headers":
            return _send(h, 200, json.dumps(dict(h.headers.items())), "application/json")
        if path in ("/img.png", "/font.woff2", "/video.mp4"):
            return _send(h, 200, "x" * 64, "application/octet-stream")
        return _send(h, 404, _page("not found"))


def _send(h: BaseHTTPRequestHandler, status: int, body: str, ctype: str = "text/html") -> None:
    data = body.encode()
    h.send_response(status)
    h.send_header("Content-Type", f"{ctype}; charset=utf-8")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class Listener:
    """A TCP listener that only counts: the "internal service" a page must never reach."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        import socket

        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def _run(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                self.received += conn.recv(4096)
            conn.close()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.close()


def need_browser() -> str:
    """The browser the renderer tests use; without one, the test fails naming what to install.

    ``make test`` installs it as root (``make setup``); elsewhere the failure says what to
    install. ``SHOAL_SKIP_RENDER_TESTS=1`` turns the failure into a skip, on purpose and
    visibly (``-rs`` lists it), never silently.
    """
    import os

    import pytest

    from shoal.render import missing_piece
    from shoal.settings import Settings

    missing = missing_piece(Settings())
    if missing is None:
        from shoal.render import find_browser

        return find_browser(Settings())
    if os.environ.get("SHOAL_SKIP_RENDER_TESTS") == "1":
        pytest.skip(f"SHOAL_SKIP_RENDER_TESTS=1: {missing}")
    pytest.fail(f"rendering tests need a browser: {missing} (or SHOAL_SKIP_RENDER_TESTS=1)")
