"""A hostile site: slow, throttling, flaky, resetting, looping, huge, compressed, mis-encoded.

A raw asyncio server (no HTTP framework) in its own thread on 127.0.0.1, so misbehaviour is
byte-exact: resets are real RSTs (``SO_LINGER`` 0), a drip is one byte per write.

    site = HostileSite(robots="User-agent: *\\nDisallow: /\\n").start()
    site.url("/flaky?n=2"); site.hits["/flaky"]; site.stop()

Paths (query parameters in brackets, with defaults):

- ``/``, ``/ok``, ``/private/...`` (a small HTML page each), ``/status/CODE``, ``/headers``
  (the request headers as JSON)
- ``/slow-headers?s=1`` sleep ``s`` seconds before sending anything
- ``/drip?bytes=10&every=0.1`` headers at once (Content-Length ``bytes``), then one byte every
  ``every`` seconds
- ``/retry-after?n=1&s=1`` 429 with ``Retry-After: s`` for the first ``n`` hits of this exact
  path+query, then 200; ``/flaky?n=1[&status=500]`` the same with a 5xx and no Retry-After
- ``/reset`` reads the request, then RST; ``/reset-mid`` headers and half the body, then RST
- ``/redirect-loop`` (302 to ``/redirect-loop/b`` and back), ``/redirect?n=3[&status=302]``
  (``n`` hops, then 200), ``/redirect-to?url=...[&status=302]``
- ``/huge?mb=1[&chunked=1]`` a streamed body of ``mb`` MiB (chunked: no Content-Length)
- ``/until-close`` a page with neither Content-Length nor chunking (it ends with the
  connection); ``/interim`` a ``100 Continue`` before the page; ``/huge-head?kb=100`` a page
  with ``kb`` KB of headers; ``/garbage`` an answer that is not HTTP
- ``/then-drop`` a page, after which the next request on the same connection is read and the
  connection closed without an answer (a server dropping an idle keep-alive connection)
- ``/gzip-bomb?mb=10`` gzip of ``mb`` MiB of zeros, ``Content-Encoding: gzip`` (built once per
  size and cached); ``/deflate-bomb?mb=10[&raw=1]`` the same in zlib format (raw deflate);
  ``/br-bomb?mb=256`` brotli (405 bytes for 256 MiB; 501 without ``brotli``); ``/gzip``,
  ``/deflate`` (zlib format), ``/br`` (501 without ``brotli``): ``COMPRESSED_PAGE`` encoded;
  ``/stacked?n=2`` ``COMPRESSED_PAGE`` gzipped ``n`` times under ``n`` codings
- ``/switch`` a ``101 Switching Protocols`` to websocket nobody asked for; ``/early-hints`` a
  ``100`` and a ``103`` (with a ``Link``) before the page
- ``/cookies`` two ``Set-Cookie`` fields; ``/two-locations?same=0`` a 302 with two ``Location``
  fields (to ``/ok?a`` and ``/ok?b``, or twice ``/ok?a``); ``/two-lengths`` two different
  ``Content-Length`` fields
- ``/enc/...``: the pages of ``ENC_PAGES`` (bytes and Content-Type); their decoded text is
  ``EXPECTED_TEXT[path]``
- ``/pdf``, ``/image.png``, ``/json``
- ``/robots.txt``: ``robots`` (default ``DEFAULT_ROBOTS``: ``/private/`` disallowed for all)
  with status ``robots_status``; ``robots_status=0`` resets the connection instead (network
  failure). Both are plain attributes and may be changed while the site runs.

Every request counts in ``hits`` (by path), ``hits_full`` (by path?query), ``log`` (method,
target, headers, monotonic time) and the in-flight gauge ``in_flight``/``peak``;
``connections`` counts connections. ``HostileSite(tls=context)`` serves all of it over HTTPS.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import json
import socket
import ssl
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

MIB = 1 << 20

DEFAULT_ROBOTS = "User-agent: *\nDisallow: /private/\n"

# --- pages whose text is known -------------------------------------------------------------

_FRENCH = (
    "« Où est la bibliothèque ? » demanda Zoë. Le garçon répondit : “Derrière l’église, à "
    "côté du café.” Ça coûte 12,50 € — très cher pour un œuf brûlé et une crème brûlée. "
    "Die Straße in München ist schön; Grüße aus Köln. Señor Muñoz comió jamón y piña el año "
    "pasado. Naïve façade, déjà vu, fiancée, résumé… ‘quoted’ – dash • bullet ™ © ®. "
    "L’hôtel près de la forêt était fermé ; nous sommes allés à l’auberge où l’on mange bien."
)
_RUSSIAN = (
    "Съешь же ещё этих мягких французских булок, да выпей чаю. В чащах юга жил бы цитрус? Да, "
    "но фальшивый экземпляр! Москва — столица России. Сегодня в городе ожидается солнечная "
    "погода, температура воздуха около двадцати градусов. Цена товара: 1 200 рублей, доставка "
    "бесплатная. Отзывы покупателей: «Отличное качество, рекомендую всем друзьям»."
)
_JAPANESE = (
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした"
    "所でニャーニャー泣いていた事だけは記憶している。吾輩はここで始めて人間というものを見た。"
    "価格は千二百円（税込）です。送料は無料、お届けは三日以内となります。商品の説明をよく読んで"
    "からご注文ください。"
)


def _page(title: str, text: str, meta: str = "") -> str:
    return (
        f"<!doctype html><html><head>{meta}<title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p><p>{text}</p></body></html>"
    )


#: path -> (body bytes, Content-Type header), for the decoder tests and the ``/enc/`` paths.
ENC_PAGES: dict[str, tuple[bytes, str]] = {}
#: path -> the text a correct decoder (or decompressor) produces for that path's body.
EXPECTED_TEXT: dict[str, str] = {}


def _add_enc(path: str, text: str, codec: str, content_type: str, bom: bytes = b"") -> None:
    ENC_PAGES[path] = (bom + text.encode(codec), content_type)
    EXPECTED_TEXT[path] = text


def _build_enc_pages() -> None:
    # The five named cases: the header says iso-8859-1 (decoded as windows-1252, as browsers
    # do: the € and curly quotes only exist there), no charset anywhere, Shift_JIS named only
    # in <meta>, windows-1251 bytes under a header that says utf-8, UTF-16 with a BOM under a
    # header that lies.
    _add_enc("/enc/cp1252", _page("Café", _FRENCH), "cp1252", "text/html; charset=ISO-8859-1")
    _add_enc("/enc/cp1252-undeclared", _page("Café", _FRENCH), "cp1252", "text/html")
    sjis_meta = _page("吾輩は猫である", _JAPANESE, '<meta charset="Shift_JIS">')
    _add_enc("/enc/sjis-meta", sjis_meta, "shift_jis", "text/html")
    cp1251 = _page("Новости", _RUSSIAN)
    _add_enc("/enc/cp1251-wrong-header", cp1251, "cp1251", "text/html; charset=utf-8")
    utf16 = _page("UTF-16 ✓", _FRENCH + " " + _RUSSIAN + " " + _JAPANESE)
    _add_enc(
        "/enc/bom-utf16", utf16, "utf-16-le", "text/html; charset=iso-8859-1", codecs.BOM_UTF16_LE
    )
    # The full matrix: each legacy encoding declared in the header, in <meta>, not at all, and
    # mis-declared as UTF-8 in the header.
    for name, codec, label, title, text in (
        ("cp1252", "cp1252", "windows-1252", "Café", _FRENCH),
        ("sjis", "shift_jis", "Shift_JIS", "吾輩は猫である", _JAPANESE),
        ("cp1251", "cp1251", "windows-1251", "Новости", _RUSSIAN),
    ):
        _add_enc(f"/enc/{name}/header", _page(title, text), codec, f"text/html; charset={label}")
        meta = f'<meta http-equiv="Content-Type" content="text/html; charset={label}">'
        _add_enc(f"/enc/{name}/meta", _page(title, text, meta), codec, "text/html")
        _add_enc(f"/enc/{name}/undeclared", _page(title, text), codec, "text/html")
        wrong = "text/html; charset=utf-8"
        _add_enc(f"/enc/{name}/wrong-header", _page(title, text), codec, wrong)
    _add_enc("/enc/utf8", _page("Ünïcödé ✓", _FRENCH + _RUSSIAN + _JAPANESE), "utf-8", "text/html")


_build_enc_pages()

COMPRESSED_PAGE = _page("Compressed", "This page travels compressed. " * 50)
for _path in ("/gzip", "/deflate", "/br"):
    EXPECTED_TEXT[_path] = COMPRESSED_PAGE


def _gzip(data: bytes) -> bytes:
    co = zlib.compressobj(6, zlib.DEFLATED, 31)
    return co.compress(data) + co.flush()


def _brotli(data: bytes) -> bytes | None:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return None
    return brotli.compress(data)


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/MediaBox[0 0 3 3]/Parent 2 0 R>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
PNG_BYTES = _png_1x1()
JSON_DOC = {"name": "Product 1", "price": 12.5, "tags": ["a", "b"]}

_BOMBS: dict[tuple[str, int], bytes] = {}
_BOMBS_LOCK = threading.Lock()


def _zlib_bomb(kind: str, mb: int, wbits: int) -> bytes:
    with _BOMBS_LOCK:
        if (kind, mb) not in _BOMBS:
            co = zlib.compressobj(9, zlib.DEFLATED, wbits)
            zeros = bytes(MIB)
            _BOMBS[kind, mb] = b"".join([co.compress(zeros) for _ in range(mb)] + [co.flush()])
        return _BOMBS[kind, mb]


def gzip_bomb(mb: int) -> bytes:
    """gzip of ``mb`` MiB of zeros (about 1 KB per MiB), built once per size."""
    return _zlib_bomb("gzip", mb, 31)


def deflate_bomb(mb: int, raw: bool = False) -> bytes:
    """zlib-format (or, ``raw``, bare deflate) ``mb`` MiB of zeros, built once per size."""
    return _zlib_bomb("raw" if raw else "zlib", mb, -15 if raw else 15)


def brotli_bomb(mb: int) -> bytes | None:
    """brotli of ``mb`` MiB of zeros (405 bytes for 256 MiB, 0.3 s to build at quality 5),
    built once per size; None without ``brotli``."""
    try:
        import brotli
    except ImportError:
        return None
    with _BOMBS_LOCK:
        if ("br", mb) not in _BOMBS:
            _BOMBS["br", mb] = brotli.compress(bytes(mb * MIB), quality=5)
        return _BOMBS["br", mb]


# --- a threaded asyncio server -------------------------------------------------------------


class LoopServer:
    """An asyncio TCP server on 127.0.0.1 (port chosen by the OS) running in its own thread.

    Subclasses implement ``_handle(reader, writer)``; the connection is closed after it.
    Handler crashes are kept in ``errors`` (tests may assert it stays empty); ``connections``
    counts the connections accepted. With ``tls`` (a server context) it speaks HTTPS.
    """

    name = "loop-server"

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.connections = 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port: int = sock.getsockname()[1]
        self.errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self):  # type: ignore[no-untyped-def]
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, sock=self._sock, backlog=1024, ssl=self.tls)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # only stop() cancels; re-raising makes asyncio log the cancelled callback
        except Exception as exc:  # noqa: BLE001 - kept for the tests to see
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            writer.transport.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-cased names
    at: float  # time.monotonic() when the head was read
    key: str = ""  # path?query, as counted in ``HostileSite.hits_full``

    @property
    def wants_close(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return conn == "close" or (self.version == "HTTP/1.0" and conn != "keep-alive")


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request head on a connection, ``None`` at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return Request(method.upper(), target, version.strip(), headers, time.monotonic())


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with an RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = _REASONS.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    407: "Proxy Authentication Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

_HTML = "text/html; charset=utf-8"


class _Closed(Exception):
    """Internal: the handler closed (or reset) the connection itself."""


class HostileSite(LoopServer):
    """The hostile site; see the module docstring for its paths."""

    name = "hostile-site"

    def __init__(
        self,
        robots: str | None = None,
        robots_status: int = 200,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls)
        self.robots = DEFAULT_ROBOTS if robots is None else robots
        self.robots_status = robots_status
        self.hits: collections.Counter[str] = collections.Counter()
        self.hits_full: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[Request] = collections.deque(maxlen=100_000)
        self.in_flight = 0
        self.peak = 0

    def start(self) -> HostileSite:
        super().start()
        return self

    def url(self, path: str = "/") -> str:
        return f"{self.origin}{path}"

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def reset_stats(self) -> None:
        """Forget hits (so ``/flaky`` and ``/retry-after`` fail again), the log and the peak."""
        self.hits.clear()
        self.hits_full.clear()
        self.log.clear()
        self.peak = self.in_flight

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        drop_next = False
        while True:
            req = await read_request(reader)
            if req is None:
                return
            length = int(req.headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            split = urlsplit(req.target)
            path = split.path or "/"
            req.key = path + ("?" + split.query if split.query else "")
            self.hits[path] += 1
            self.hits_full[req.key] += 1
            self.log.append(req)
            if drop_next:  # answered nothing: as a server closing an idle connection does
                return
            drop_next = path == "/then-drop"
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await self._route(req, path, dict(parse_qsl(split.query)), writer)
            except _Closed:
                return
            finally:
                self.in_flight -= 1
            if req.wants_close:
                return

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: str = _HTML,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        head = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        if req.wants_close:
            head.append(("Connection", "close"))
        writer.write(response_head(status, head) + (b"" if req.method == "HEAD" else body))
        await writer.drain()

    async def _page(self, writer: asyncio.StreamWriter, req: Request, title: str) -> None:
        await self._send(writer, req, 200, _page(title, title).encode())

    async def _route(
        self, req: Request, path: str, q: dict[str, str], writer: asyncio.StreamWriter
    ) -> None:
        if path in ("/", "/ok", "/then-drop") or path.startswith("/private/"):
            return await self._page(writer, req, path)
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return await self._send(writer, req, code, f"<h1>status {code}</h1>".encode())
        if path == "/headers":
            return await self._send(
                writer, req, 200, json.dumps(req.headers).encode(), "application/json"
            )
        if path == "/slow-headers":
            await asyncio.sleep(float(q.get("s", "1")))
            return await self._page(writer, req, "slow headers")
        if path == "/drip":
            n, every = int(q.get("bytes", "10")), float(q.get("every", "0.1"))
            head = [("Content-Type", "text/plain"), ("Content-Length", str(n))]
            writer.write(response_head(200, head))
            await writer.drain()
            for i in range(n):
                if i:
                    await asyncio.sleep(every)
                writer.write(b"x")
                await writer.drain()
            return None
        if path in ("/retry-after", "/flaky"):
            if self.hits_full[req.key] <= int(q.get("n", "1")):
                if path == "/flaky":
                    code = int(q.get("status", "500"))
                    return await self._send(writer, req, code, b"<h1>try again</h1>")
                retry = (("Retry-After", q.get("s", "1")),)
                return await self._send(writer, req, 429, b"<h1>slow down</h1>", headers=retry)
            return await self._page(writer, req, "finally")
        if path == "/reset":
            reset(writer)
            raise _Closed
        if path == "/until-close":  # no Content-Length, not chunked: the body ends at EOF
            body = _page("until close", "y" * 30_000).encode()
            writer.write(response_head(200, [("Content-Type", _HTML)]) + body)
            await writer.drain()
            raise _Closed
        if path == "/interim":  # a 100 Continue before the answer
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return await self._page(writer, req, "after interim")
        if path == "/huge-head":
            filler = tuple((f"X-Filler-{i}", "f" * 1000) for i in range(int(q.get("kb", "100"))))
            return await self._send(writer, req, 200, b"<h1>big head</h1>", headers=filler)
        if path == "/garbage":
            writer.write(b"SPDY/9 what is this\r\n\r\n")
            await writer.drain()
            raise _Closed
        if path == "/reset-mid":
            body = _page("reset mid-body", "x" * 20_000).encode()
            head = [("Content-Type", _HTML), ("Content-Length", str(len(body)))]
            writer.write(response_head(200, head) + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            reset(writer)
            raise _Closed
        if path in ("/redirect-loop", "/redirect-loop/b"):
            target = "/redirect-loop/b" if path == "/redirect-loop" else "/redirect-loop"
            return await self._redirect(writer, req, target, 302)
        if path == "/redirect":
            n = int(q.get("n", "3"))
            if n <= 0:
                return await self._page(writer, req, "redirected")
            status = int(q.get("status", "302"))
            return await self._redirect(writer, req, f"/redirect?n={n - 1}&status={status}", status)
        if path == "/redirect-to":
            return await self._redirect(writer, req, q.get("url", "/"), int(q.get("status", "302")))
        if path == "/huge":
            return await self._huge(writer, req, float(q.get("mb", "1")), q.get("chunked") == "1")
        if path == "/gzip-bomb":
            body = gzip_bomb(int(q.get("mb", "10")))
            return await self._send(writer, req, 200, body, headers=(("Content-Encoding", "gzip"),))
        if path in ("/gzip", "/deflate", "/br"):
            return await self._compressed(writer, req, path[1:])
        if path == "/deflate-bomb":
            body = deflate_bomb(int(q.get("mb", "10")), raw=q.get("raw") == "1")
            return await self._send(
                writer, req, 200, body, headers=(("Content-Encoding", "deflate"),)
            )
        if path == "/br-bomb":
            bomb = brotli_bomb(int(q.get("mb", "256")))
            if bomb is None:
                return await self._send(writer, req, 501, b"<h1>brotli is not installed</h1>")
            return await self._send(writer, req, 200, bomb, headers=(("Content-Encoding", "br"),))
        if path == "/stacked":
            n = int(q.get("n", "2"))
            body = COMPRESSED_PAGE.encode()
            for _ in range(n):
                body = _gzip(body)
            codings = (("Content-Encoding", ", ".join(["gzip"] * n)),)
            return await self._send(writer, req, 200, body, headers=codings)
        if path == "/switch":  # llhttp raises HttpParserUpgrade, no HttpParserError, on this
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n\x81\x05hello"
            )
            await writer.drain()
            raise _Closed
        if path == "/early-hints":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            return await self._page(writer, req, "after early hints")
        if path == "/cookies":
            cookies = (("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2, c=3; Path=/"))
            return await self._send(writer, req, 200, b"<h1>cookies</h1>", headers=cookies)
        if path == "/two-locations":
            second = "/ok?a" if q.get("same") == "1" else "/ok?b"
            both = (("Location", "/ok?a"), ("Location", second))
            return await self._send(writer, req, 302, b"<a>moved</a>", headers=both)
        if path == "/two-lengths":
            head = [("Content-Type", _HTML), ("Content-Length", "3"), ("Content-Length", "4")]
            writer.write(response_head(200, head) + b"abcd")
            await writer.drain()
            raise _Closed
        if path in ENC_PAGES:
            body, ctype = ENC_PAGES[path]
            return await self._send(writer, req, 200, body, ctype)
        if path == "/pdf":
            return await self._send(writer, req, 200, PDF_BYTES, "application/pdf")
        if path == "/image.png":
            return await self._send(writer, req, 200, PNG_BYTES, "image/png")
        if path == "/json":
            body = json.dumps(JSON_DOC).encode()
            return await self._send(writer, req, 200, body, "application/json")
        if path == "/robots.txt":
            if self.robots_status == 0:
                reset(writer)
                raise _Closed
            body = self.robots.encode()
            return await self._send(writer, req, self.robots_status, body, "text/plain")
        return await self._send(writer, req, 404, b"<h1>not found</h1>")

    async def _redirect(
        self, writer: asyncio.StreamWriter, req: Request, location: str, status: int
    ) -> None:
        headers = (("Location", location),)
        await self._send(writer, req, status, b"<a>moved</a>", headers=headers)

    async def _huge(
        self, writer: asyncio.StreamWriter, req: Request, mb: float, chunked: bool
    ) -> None:
        total = int(mb * MIB)
        head = [("Content-Type", _HTML)]
        head.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(total)))
        writer.write(response_head(200, head))
        block = b"<p>" + b"h" * (64 * 1024 - 7) + b"</p>"
        sent = 0
        while sent < total:
            part = block[: total - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            sent += len(part)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def _compressed(self, writer: asyncio.StreamWriter, req: Request, kind: str) -> None:
        raw = COMPRESSED_PAGE.encode()
        if kind == "gzip":
            body: bytes | None = _gzip(raw)
        elif kind == "deflate":
            body = zlib.compress(raw)
        else:
            body = _brotli(raw)
        if body is None:
            return await self._send(writer, req, 501, b"<h1>brotli is not installed</h1>")
        await self._send(writer, req, 200, body, headers=(("Content-Encoding", kind),))
