"""``/v1/uploads``: upload a URL file (NDJSON or CSV, optionally gzip) and read it back.

The body is streamed: chunks go from the event loop through a bounded pipe to a thread that
normalizes them (``shoal.inputs``) straight into storage (``uploads/<id>/input.ndjson``), so a
1 GB file never sits in memory and the event loop never waits on parsing. Anything refused
(too large, unreadable, empty) leaves no file and no row behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from api.deps import CurrentAccount, SettingsDep, StorageDep, StoreDep, own_upload
from api.errors import answers
from api.ingress import FORM_SLACK
from shoal import inputs
from shoal.contract import UploadPublic
from shoal.errors import FieldError, InputError, MalformedBody, TooLarge, UnsupportedMedia
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import UploadRow, aware, new_id, utcnow

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

T = TypeVar("T")

_FORM_SLACK = FORM_SLACK
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY = {
    "required": True,
    "description": "The URL file as the raw body (optionally `Content-Encoding: gzip`), or as "
    "the multipart form field `file`.",
    "content": {
        "application/x-ndjson": _BINARY,
        "application/jsonl": _BINARY,
        "text/csv": _BINARY,
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


def _public(row: UploadRow) -> UploadPublic:
    return UploadPublic(
        id=row.id,
        format=row.format,  # type: ignore[arg-type]
        size_bytes=row.size_bytes,
        lines=row.lines,
        urls_valid=row.urls_valid,
        errors=row.errors or [],  # type: ignore[arg-type]
        created_at=aware(row.created_at),  # type: ignore[arg-type]
    )


def _in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` on a thread of its own (not the shared executor, which a few long uploads
    would exhaust) and return a future of its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting request
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=run, name="shoal-upload", daemon=True).start()
    return fut


class _Normalizing:
    """The thread normalizing one file, fed through a pipe."""

    def __init__(
        self,
        storage: Storage,
        dest: str,
        fmt: inputs.InputFormat | str,
        settings: Settings,
        loc: str,
        gzipped: bool,
    ) -> None:
        self.pipe = inputs.Pipe()
        self._finished = False
        pipe = self.pipe

        def work() -> inputs.InputStats:
            try:
                return inputs.normalize_to(
                    pipe,  # type: ignore[arg-type]
                    storage,
                    dest,
                    fmt=fmt,
                    settings=settings,
                    max_bytes=settings.max_upload_bytes,
                    max_lines=settings.max_urls_per_job,
                    loc=loc,
                    gzipped=gzipped,
                    # decompressing what the pipe already holds stops too when the client left
                    stop=lambda: pipe.aborted,
                )
            finally:
                pipe.stop_reading()

        self.future = _in_thread(work)

    async def feed(self, data: bytes, ahead: asyncio.Future[bytes] | None = None) -> None:
        """Hand ``data`` to the thread, waiting (without blocking the loop) while the pipe is
        full. The thread counts the bytes against the cap (``inputs.normalize``); past it, it
        stops and the upload ends with its ``TooLarge``. ``ahead`` is the body's next chunk
        being received: when it says the client left, this raises ``ClientDisconnect`` at once
        instead of waiting for room."""
        if self._finished or not data:
            return
        await self._put(data, ahead)

    async def _put(self, data: bytes | None, ahead: asyncio.Future[Any] | None = None) -> None:
        delay = 0.001
        while not self.pipe.try_put(data):
            if self.pipe.closed_by_reader:
                return  # it stopped (failed): its error is the answer
            if _client_left(ahead):
                raise ClientDisconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def finish(self, receive: Receive) -> inputs.InputStats:
        """The end of the data: wait for the thread's result. The body has been received
        whole, but the thread may have much left to do (a gzip bomb inflates from what the
        pipe holds): a client that leaves meanwhile (``http.disconnect`` on ``receive``) ends
        the wait with ``ClientDisconnect``, and the caller's abort stops the thread."""
        gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(receive))
        gone.add_done_callback(_quiet)
        try:
            if not self._finished:
                self._finished = True
                await self._put(None, gone)
            either: set[asyncio.Future[Any]] = {self.future, gone}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not self.future.done() and _client_left(gone):
                raise ClientDisconnect()
            return await self.future
        finally:
            gone.cancel()

    async def abort(self) -> None:
        """Stop the thread and wait for it (it removes what it wrote)."""
        self.pipe.abort()
        with contextlib.suppress(BaseException):
            await self.future

    @property
    def stopped(self) -> bool:
        return self.future.done()


class _Form:
    """Incremental multipart/form-data parsing: the first ``file`` part's bytes as they come
    (other fields are skipped, never stored)."""

    def __init__(self, boundary: bytes) -> None:
        self.file_parts = 0
        self.file_info: tuple[str, str] | None = None  # (content type, filename)
        self.file_ended = False
        self.pending: list[bytes] = []
        self._headers: dict[str, bytes] = {}
        self._field = b""
        self._value = b""
        self._in_file = False
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        if params.get(b"name") != b"file":
            return
        self.file_parts += 1
        if self.file_parts == 1:
            self._in_file = True
            ctype = self._headers.get("content-type", b"").decode("latin-1")
            self.file_info = (ctype, params.get(b"filename", b"").decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.file_ended = True

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending.clear()
        return data


def _raw_format(content_type: str) -> str:
    fmt = inputs.media_format(content_type)
    if fmt is None or not content_type.strip():
        raise UnsupportedMedia(
            f"cannot upload a body of type {content_type or '(none)'!r}",
            errors=[
                FieldError(
                    "Content-Type",
                    "send the file as application/x-ndjson, application/jsonl or text/csv "
                    "(optionally with Content-Encoding: gzip), or as multipart form field `file`",
                )
            ],
        )
    return fmt


async def _disconnected(receive: Receive) -> None:
    """Raise ``ClientDisconnect`` once the client leaves (after the body: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    raise ClientDisconnect()


def _client_left(ahead: asyncio.Future[Any] | None) -> bool:
    return (
        ahead is not None
        and ahead.done()
        and not ahead.cancelled()
        and isinstance(ahead.exception(), ClientDisconnect)
    )


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a chunk nobody waits for any more is no error


async def _chunks(request: Request) -> AsyncIterator[tuple[bytes, asyncio.Future[bytes]]]:
    """The body's chunks, each with the receive of the next one already under way: a client
    that leaves while a chunk waits for room in the pipe is seen at once (``http.disconnect``),
    and at most one chunk is held besides the pipe."""
    it = request.stream().__aiter__()
    ahead: asyncio.Future[bytes] = asyncio.ensure_future(it.__anext__())
    ahead.add_done_callback(_quiet)
    try:
        while True:
            try:
                chunk = await ahead
            except StopAsyncIteration:
                return
            ahead = asyncio.ensure_future(it.__anext__())
            ahead.add_done_callback(_quiet)
            yield chunk, ahead
    finally:
        ahead.cancel()


async def _from_raw(request: Request, work: _Normalizing) -> inputs.InputStats:
    async for chunk, ahead in _chunks(request):
        if work.stopped:
            break  # the thread failed early (e.g. no url column): no need to read on
        await work.feed(chunk, ahead)
    return await work.finish(request.receive)


async def _from_form(
    request: Request, boundary: bytes, start: Callable[[str], _Normalizing], limit: int
) -> inputs.InputStats:
    """The form's ``file`` part through ``start(fmt)``'s normalizer (the caller aborts it on
    any error)."""
    form = _Form(boundary)
    work: _Normalizing | None = None
    received = 0
    try:
        async for chunk, ahead in _chunks(request):
            received += len(chunk)
            if received > limit + _FORM_SLACK:
                raise TooLarge(f"the file is more than {limit} bytes (the upload limit)")
            form.parser.write(chunk)
            if form.file_info is not None and work is None:
                ctype, filename = form.file_info
                fmt = inputs.name_format(filename) or inputs.media_format(ctype) or "auto"
                work = start(fmt)
            if work is not None:
                if work.stopped:
                    break
                if form.pending:
                    await work.feed(form.take(), ahead)
                if form.file_ended:
                    break  # the rest of the form is of no interest
        else:
            form.parser.finalize()
    except MultipartParseError as exc:
        raise MalformedBody(
            "not a valid multipart/form-data body", errors=[FieldError("file", str(exc))]
        ) from exc
    if work is None:
        raise InputError(
            "no file in the form", errors=[FieldError("file", "the form has no `file` field")]
        )
    if not form.file_ended and not work.stopped:
        raise MalformedBody(
            "the multipart body ended inside the file",
            errors=[FieldError("file", "the form ended before the file part did")],
        )
    return await work.finish(request.receive)


@router.post(
    "",
    status_code=201,
    response_model=UploadPublic,
    summary="Upload a URL file (NDJSON or CSV, optionally gzip)",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        415: {"description": "A raw body of another content type"},
        400: {
            "description": "Corrupt gzip, or `Content-Encoding: gzip` on a body that is not gzip"
        },
        413: {
            "description": "Larger than `SHOAL_MAX_UPLOAD_BYTES` (compressed or not), "
            "decompressing more than `SHOAL_MAX_UPLOAD_RATIO` times, more lines than "
            "`SHOAL_MAX_UPLOAD_LINES` or more URLs than `SHOAL_MAX_URLS_PER_JOB`"
        },
        422: {"description": "No URLs, no `url` column, an unknown CSV column"},
    },
)
async def create_upload(
    request: Request,
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
) -> JSONResponse:
    """Stream the file into storage, normalized; invalid lines are counted and reported
    (the first 100), never fatal. Use the answer's ``id`` as a job's ``input.upload_id``."""
    # api.ingress has checked the key, the Content-Encoding and the Content-Length already,
    # and cuts the body past the upload limit (plus multipart framing)
    limit = settings.max_upload_bytes
    ctype = request.headers.get("content-type", "")
    media, params = parse_options_header(ctype)
    # api.ingress let only gzip through, and only on a raw body
    encoding = request.headers.get("content-encoding", "").strip().lower() or "identity"
    upload_id = new_id("upl")
    folder = storage.url("uploads", upload_id)
    dest = storage.url("uploads", upload_id, "input.ndjson")
    multipart = media == b"multipart/form-data"
    loc = "file" if multipart else "body"
    work: _Normalizing | None = None

    def start(fmt: str) -> _Normalizing:
        nonlocal work
        gzipped = encoding != "identity"
        work = _Normalizing(storage, dest, fmt, settings, loc, gzipped=gzipped)
        return work

    try:
        if multipart:
            boundary = params.get(b"boundary")
            if not boundary:
                raise MalformedBody(
                    "multipart body without a boundary",
                    errors=[FieldError("Content-Type", "multipart/form-data needs a boundary")],
                )
            stats = await _from_form(request, boundary, start, limit)
        else:
            stats = await _from_raw(request, start(_raw_format(ctype)))
        row = UploadRow(
            id=upload_id,
            account_id=account.id,
            format=stats.format,
            size_bytes=stats.size_bytes,
            lines=stats.lines,
            urls_valid=stats.urls_valid,
            errors=stats.errors,
            fields=stats.fields,
            screenshots=int(stats.screenshots),  # a job's CSV/Parquet columns follow it
            url=dest,
            created_at=utcnow(),
        )
        await asyncio.to_thread(store.insert_upload, row)
    except BaseException as exc:
        if work is not None:
            await work.abort()
        await asyncio.to_thread(storage.rm, folder, True)
        if isinstance(exc, ClientDisconnect):
            raise MalformedBody("the client went away mid-upload") from exc
        raise
    return JSONResponse(
        _public(row).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/uploads/{upload_id}"},
    )


@router.get(
    "/{upload_id}",
    response_model=UploadPublic,
    summary="An upload's counts and errors",
    responses=answers(404),
)
def get_upload(upload_id: str, account: CurrentAccount, store: StoreDep) -> UploadPublic:
    return _public(own_upload(store, upload_id, account.id))
