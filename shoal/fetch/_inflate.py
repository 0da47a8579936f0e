"""Streaming decompression of response bodies, in bounded steps.

The transport hands over bodies still encoded, so that the body cap counts *decompressed* bytes:
every decoder (gzip, deflate, brotli) hands out at most ``STEP`` bytes per piece, however much a
piece of input expands to, the engine adds the pieces up and stops at the cap, so a compression
bomb costs at most cap + a few steps of memory: 1 GiB of zeros in 1 MiB of gzip, or 256 MiB of
zeros in 405 bytes of brotli (which a single call used to inflate whole: 1 KiB of input does not
bound brotli's output). At most ``MAX_CODINGS`` codings are stacked (``Content-Encoding: gzip,
gzip, ...`` 10,000 times would be 10,000 decoders, each with its own window), as curl does.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

try:  # optional: advertised and decoded only when installed
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import brotlicffi as brotli  # type: ignore[import-not-found, no-redef]
    except ImportError:
        brotli = None

#: Largest piece of output one decoder step produces.
STEP = 256 * 1024
#: Brotli's ``output_buffer_limit`` stops growing its buffer once it holds this much; the buffer
#: grows in blocks (32, 64, 128 KiB...), so one piece stays under twice this: 224 KiB, measured.
_BROTLI_LIMIT = STEP // 2
#: The most codings one Content-Encoding may stack (curl allows 5).
MAX_CODINGS = 5


class DecodeError(Exception):
    """The body is not valid for its Content-Encoding."""


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...
    def flush(self) -> Iterator[bytes]: ...


class _Zlib:
    """gzip (possibly several members) or deflate (zlib-wrapped or, as some servers send, raw)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj: zlib._Decompress | None = None
        self._done = False

    def _new(self, first: bytes) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # RFC 1950 header: compression method 8 and a check value making the pair divisible by 31.
        zlib_header = (
            len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] * 256 + first[1]) % 31 == 0
        )
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._obj is None:
                if self._done and not self._gzip:
                    return  # trailing bytes after a deflate stream: ignored, as browsers do
                if self._done and data.lstrip(b"\x00") == b"":
                    return  # zero padding after the last gzip member
                self._obj = self._new(data)
            try:
                out = self._obj.decompress(data, STEP)
                if out:
                    yield out
                while self._obj.unconsumed_tail:
                    out = self._obj.decompress(self._obj.unconsumed_tail, STEP)
                    if out:
                        yield out
            except zlib.error as exc:
                kind = "gzip" if self._gzip else "deflate"
                raise DecodeError(f"invalid {kind} data: {exc}") from exc
            if self._obj.eof:
                data = self._obj.unused_data  # the next gzip member, if any
                self._obj = None
                self._done = True
            else:
                data = b""

    def flush(self) -> Iterator[bytes]:
        if self._obj is not None:
            out = self._obj.flush()
            if out:
                yield out


class _Brotli:
    """Brotli, bounded per piece with ``output_buffer_limit`` (brotli >= 1.2): the rest of the
    output is drawn with empty input, as the library asks, before more input is fed."""

    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        obj = self._obj
        try:
            out = obj.process(data, output_buffer_limit=_BROTLI_LIMIT)
            while True:
                if out:
                    yield out
                if obj.is_finished() or (not out and obj.can_accept_more_data()):
                    return
                out = obj.process(b"", output_buffer_limit=_BROTLI_LIMIT)
        except brotli.error as exc:
            raise DecodeError(f"invalid br data: {exc}") from exc

    def flush(self) -> Iterator[bytes]:
        return iter(())


class _Chain:
    """Several encodings, applied in order (``Content-Encoding: gzip, br`` decodes br first)."""

    def __init__(self, decoders: list[_Decoder]) -> None:
        self._decoders = decoders

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, (data,))

    def flush(self) -> Iterator[bytes]:
        for i, d in enumerate(self._decoders):
            yield from self._through(i + 1, d.flush())

    def _through(self, start: int, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """Push ``pieces`` through decoders ``start..``, one bounded piece at a time."""
        if start == len(self._decoders):
            yield from pieces
            return
        for piece in pieces:
            yield from self._through(start + 1, self._decoders[start].feed(piece))


def accept_encoding() -> str:
    """The Accept-Encoding this process can decode."""
    return "gzip, deflate, br" if brotli is not None else "gzip, deflate"


def decoder_for(content_encoding: str | None) -> _Decoder | None:
    """A decoder for the header's codings; None for identity (or codings nobody can decode).

    Unknown codings (servers do send ``Content-Encoding: utf-8``) are treated as identity,
    as browsers do; the bytes are kept as they came.
    """
    if not content_encoding:
        return None
    tokens = [t.strip().lower() for t in content_encoding.split(",")]
    if len(tokens) > MAX_CODINGS:
        raise DecodeError(f"more than {MAX_CODINGS} content codings stacked")
    chain: list[_Decoder] = []
    for token in reversed(tokens):
        if token in ("gzip", "x-gzip"):
            chain.append(_Zlib(gzip=True))
        elif token == "deflate":
            chain.append(_Zlib(gzip=False))
        elif token == "br" and brotli is not None:
            chain.append(_Brotli())
    if not chain:
        return None
    return chain[0] if len(chain) == 1 else _Chain(chain)
