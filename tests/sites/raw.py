"""A scripted raw HTTP server on 127.0.0.1 for the transport's conformance and property tests.

Each request target maps to a script of steps, written byte-exact:

    with RawServer({"/x": [b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi", CLOSE]}) as s:
        s.url("/x"); s.seen  # [(connection number, target), ...]

Steps: ``bytes`` are written (and drained), a ``float`` sleeps that long (a trickling peer),
``CLOSE`` ends the connection with a FIN, ``RESET`` with an RST, ``HOLD`` sends nothing more and
waits for the client to go (a stalled peer). After the last step the next request on the same
connection is read and answered. A target with no script gets ``answer(target)``: a 200 whose
body names the target, so a test can tell whose answer a response is.

``greeting`` is written as soon as a client connects, and the connection closed (no request is
read). ``routes`` may also be a function of the request (``Request``) returning a script.
``closed_by_client`` counts connections the client ended (EOF while waiting for a request).

``tls_pair(...)`` makes a server context and a client context that trusts its CA, with the
certificate's names and validity chosen by the test (wrong host, expired, self-signed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .hostile import LoopServer, Request, read_request, reset

CLOSE = "close"
RESET = "reset"
HOLD = "hold"

Step = bytes | float | str
Script = Sequence[Step]


def answer(target: str, *, extra: bytes = b"") -> bytes:
    """A well-framed keep-alive 200 whose body is ``answer to TARGET``."""
    body = f"answer to {target}".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


class RawServer(LoopServer):
    """The scripted server; see the module docstring."""

    name = "raw-server"

    def __init__(
        self,
        routes: dict[str, Script] | Callable[[Request], Script | None] | None = None,
        tls: ssl.SSLContext | None = None,
        greeting: bytes = b"",
    ) -> None:
        super().__init__(tls)
        self.greeting = greeting
        self.routes = routes if routes is not None else {}
        self.seen: list[tuple[int, str]] = []
        self.closed_by_client = 0

    def start(self) -> RawServer:
        super().start()
        return self

    def url(self, path: str = "/") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def script_for(self, req: Request) -> Script:
        found = self.routes(req) if callable(self.routes) else self.routes.get(req.target)
        return [answer(req.target)] if found is None else found

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        if self.greeting:  # a plain HTTP server's 400 to a TLS ClientHello, say
            writer.write(self.greeting)
            await writer.drain()
            return
        while True:
            req = await read_request(reader)
            if req is None:
                self.closed_by_client += 1
                return
            self.seen.append((number, req.target))
            for step in self.script_for(req):
                if isinstance(step, bytes):
                    writer.write(step)
                    await writer.drain()
                elif isinstance(step, float):
                    await asyncio.sleep(step)
                elif step == CLOSE:
                    return
                elif step == RESET:
                    reset(writer)
                    return
                elif step == HOLD:
                    while await reader.read(65536):
                        pass
                    self.closed_by_client += 1
                    return


# --- certificates --------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


class TLSPair:
    """A server context and a client context trusting the issuer (temporary files inside)."""

    def __init__(self, server: ssl.SSLContext, client: ssl.SSLContext, folder: Path) -> None:
        self.server = server
        self.client = client
        self._folder = folder


def tls_pair(
    names: Sequence[str] = ("127.0.0.1",),
    *,
    expired: bool = False,
    self_signed: bool = False,
) -> TLSPair:
    """A leaf for ``names``, signed by a fresh CA the client trusts; ``expired``: its validity
    ended yesterday; ``self_signed``: it signs itself and the client trusts only the CA."""
    now = dt.datetime.now(dt.UTC)
    folder = Path(tempfile.mkdtemp(prefix="shoal-raw-tls-"))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Shoal raw test CA"))
        .issuer_name(_name("Shoal raw test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key, issuer_name = (key, _name(names[0])) if self_signed else (ca_key, ca.subject)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=5))
        .not_valid_after(now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=5))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = folder / "leaf.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    client = ssl.create_default_context(cafile=str(ca_pem))
    return TLSPair(server, client, folder)
