"""Which request headers Shoal may send: one rule for a job's ``headers`` (checked at creation
by ``shoal.jobs``), the operator's ``SHOAL_DEFAULT_HEADERS`` and user agent (``Settings``), and
the transport's last word (``shoal.fetch._h1.header_block``), so the three can never disagree.

A name is an RFC 9110 token; a value holds no control character but HTAB (a CR or LF would
start a header of the caller's choosing, a NUL ends the line for some servers); and headers
that frame the message or the connection are the transport's alone (RFC 9110 7.6.1: ``Host``
it writes itself; a GET declaring ``Content-Length: 5`` would leave five bytes of the next
request on a pooled keep-alive connection to be read as this one's body), as are ``Proxy-*``,
which belong to the operator's proxy configuration.
"""

from __future__ import annotations

import re

#: RFC 9110 5.6.2: a header name is a token (also served as the OpenAPI document's pattern)
TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
#: RFC 9110 5.5: the control characters a field value may not hold (HTAB is allowed)
CONTROL = r"\x00-\x08\x0a-\x1f\x7f"
#: Set by the transport for each connection and body, or meant for one hop only.
RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
    | {"te", "trailer"}
)

_NAME = re.compile(TOKEN)
_BAD_VALUE = re.compile(f"[{CONTROL}]")


def header_problem(name: str, value: str) -> str | None:
    """None when Shoal may send header ``name: value``, else why not."""
    if _NAME.fullmatch(name) is None:
        return "not an HTTP header name (an RFC 9110 token)"
    low = name.lower()
    if low in RESERVED or low.startswith("proxy-"):
        return "a hop-by-hop or framing header: Shoal sets it, not the caller"
    if _BAD_VALUE.search(value) is not None:
        return "a header value may not hold control characters (CR, LF, NUL, DEL)"
    return None
