"""Input, part and output files through fsspec: a local folder by default, ``s3://`` via s3fs.

Every path a caller handles is a *URL* made by :meth:`Storage.url`: a plain OS path when the
storage is local, ``s3://bucket/prefix/...`` otherwise. Code that needs a real file (DuckDB,
pyarrow writers) asks :meth:`Storage.local_path` and builds in a temp dir when it gets ``None``.
Remote listings are never cached (other processes keep adding parts), and
:meth:`Storage.presign` gives object-store files a credential-free download URL.

Local results are the owner's only (folders 0700, files 0600) whatever the process's umask:
they hold what was scraped for an account (``shoal.cli`` sets a umask for the rest).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import posixpath
import secrets
from collections.abc import Iterator
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any

import fsspec
import orjson
from fsspec.core import url_to_fs
from fsspec.utils import get_protocol

if TYPE_CHECKING:
    from shoal.settings import Settings

# Object stores make a single PUT visible whole or not at all, so a temp name plus ``mv``
# (a server-side copy and a delete there) buys nothing and doubles the cost.
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
# SigV4 presigned URLs live at most 7 days.
_MAX_PRESIGN_S = 7 * 24 * 3600
# local results: the owner's only (module docstring)
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def _private_dirs(path: str) -> None:
    """``os.makedirs`` with every folder it creates owner-only (its ``mode`` covers only the
    last one)."""
    if os.path.isdir(path):
        return
    _private_dirs(os.path.dirname(os.path.abspath(path)))
    with contextlib.suppress(FileExistsError):  # another process made it meanwhile
        os.mkdir(path, _DIR_MODE)


class Storage:
    """One root (local folder or fsspec URL) and the few file operations Shoal needs."""

    def __init__(self, root_url: str, **storage_options: Any) -> None:
        protocol = get_protocol(str(root_url))
        self.protocol = protocol
        self.is_local = protocol in ("file", "local")
        if self.is_local:
            storage_options.setdefault("auto_mkdir", True)
        else:
            # Other processes (the worker, chunk processes) add parts while the API reads them:
            # a cached listing would hide them, so every list/exists asks the store.
            storage_options.setdefault("use_listings_cache", False)
        if protocol in ("s3", "s3a"):
            # botocore would presign with SigV2 in us-east-1, which newer buckets refuse
            config = dict(storage_options.get("config_kwargs") or {})
            config.setdefault("signature_version", "s3v4")
            storage_options["config_kwargs"] = config
        fs, path = url_to_fs(str(root_url), **storage_options)
        self._fs: fsspec.AbstractFileSystem = fs
        if self.is_local:
            self.root = os.path.abspath(path)
        else:
            self.root = fs.unstrip_protocol(path.rstrip("/"))

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs

    def url(self, *parts: str) -> str:
        """The root joined with ``parts`` (no part may climb out of the root)."""
        for part in parts:
            if not part or any(seg == ".." for seg in str(part).replace("\\", "/").split("/")):
                raise ValueError(f"bad storage path segment: {part!r}")
        if self.is_local:
            return os.path.join(self.root, *parts)
        return posixpath.join(self.root, *parts)

    def local_path(self, url: str) -> str | None:
        """The OS path of ``url`` when the storage is local, else ``None``."""
        if not self.is_local:
            return None
        return url[len("file://") :] if url.startswith("file://") else url

    def open(self, url: str, mode: str = "rb") -> IO[Any]:
        return self._fs.open(url, mode)

    @contextlib.contextmanager
    def atomic_writer(self, url: str) -> Iterator[IO[bytes]]:
        """A file to write ``url`` through: readers see the old file or the whole new one,
        never a torn one, and after an error nothing new is left.

        Locally: a temporary name, renamed at the end. On an object store a single upload is
        only visible once it completes, so it is written in place and discarded on error;
        other filesystems write a temporary name and move it."""
        local = self.local_path(url)
        if local is not None:
            _private_dirs(os.path.dirname(local) or ".")
            tmp = f"{local}.tmp-{secrets.token_hex(6)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
                with open(fd, "wb", buffering=1 << 20) as fh:
                    yield fh
                os.replace(tmp, local)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        target = url if self.protocol in _ATOMIC_PUT else f"{url}.tmp-{secrets.token_hex(6)}"
        remote = self._fs.open(target, "wb")
        try:
            yield remote
        except BaseException:
            # never close (= complete) a partial upload: s3fs's discard aborts its multipart
            # upload; marking the file closed stops fsspec from flushing it when collected
            with contextlib.suppress(Exception):
                remote.discard()
            with contextlib.suppress(Exception):
                remote.closed = True
            if target != url:
                self.rm(target)
            raise
        remote.close()
        if target != url:
            self._fs.mv(target, url)

    def write_bytes_atomic(self, url: str, data: bytes) -> None:
        """Write ``data`` so readers see the old file or the whole new one, never a torn one."""
        with self.atomic_writer(url) as fh:
            fh.write(data)

    def copy(self, src: str, dest: str) -> None:
        """Copy ``src`` to ``dest`` in this storage (server-side on an object store), with
        :meth:`atomic_writer`'s guarantee. ``FileNotFoundError`` when ``src`` is missing."""
        if self.local_path(dest) is None and self.protocol in _ATOMIC_PUT:
            self._fs.copy(src, dest)  # one CopyObject: visible whole or not at all
            return
        tmp = f"{dest}.tmp-{secrets.token_hex(6)}"
        if self.is_local:
            _private_dirs(os.path.dirname(dest))
        try:
            self._fs.copy(src, tmp)
            if self.is_local:
                os.chmod(tmp, _FILE_MODE)
            self._fs.mv(tmp, dest)
        except BaseException:
            self.rm(tmp)
            raise

    def put_file(self, local_path: str, url: str) -> None:
        """Upload (or, locally, move) a finished local file to ``url``."""
        local = self.local_path(url)
        if local is not None:
            _private_dirs(os.path.dirname(local) or ".")
            os.chmod(local_path, _FILE_MODE)  # made by DuckDB/Polars with the umask's mode
            os.replace(local_path, local)
        else:
            self._fs.put_file(local_path, url)

    def exists(self, url: str) -> bool:
        return bool(self._fs.exists(url))

    def size(self, url: str) -> int:
        return int(self._fs.size(url))

    def list(self, prefix: str) -> list[str]:
        """Files directly under ``prefix``, as URLs, sorted; ``[]`` when it does not exist."""
        try:
            entries = self._fs.ls(prefix, detail=True)
        except FileNotFoundError:
            return []
        names = [e["name"] for e in entries if e.get("type") == "file"]
        return sorted(self._to_url(n) for n in names)

    def glob(self, pattern: str) -> builtins.list[str]:
        """URLs matching ``pattern`` (fsspec glob syntax), sorted."""
        return sorted(self._to_url(n) for n in self._fs.glob(pattern))

    def rm(self, url: str, recursive: bool = False) -> None:
        """Remove ``url`` (a folder with ``recursive=True``); missing is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm(url, recursive=recursive)

    def presign(
        self,
        url: str,
        expires_s: int,
        *,
        filename: str | None = None,
        media_type: str | None = None,
    ) -> str | None:
        """A URL that downloads ``url`` without credentials for ``expires_s`` seconds (at most
        7 days, the S3 limit), or ``None`` when the storage cannot make one (local files).

        ``filename`` and ``media_type`` become the response's Content-Disposition and
        Content-Type (S3 ``response-content-*`` parameters)."""
        if self.is_local or not hasattr(self._fs, "sign"):
            return None
        params: dict[str, str] = {}
        if self.protocol in ("s3", "s3a"):
            if filename:
                params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
            if media_type:
                params["ResponseContentType"] = media_type
        expires = max(1, min(int(expires_s), _MAX_PRESIGN_S))
        try:
            return str(self._fs.sign(url, expiration=expires, **params))
        except NotImplementedError:
            return None

    def _to_url(self, name: str) -> str:
        if self.is_local:
            return name
        return self._fs.unstrip_protocol(name)


@lru_cache(maxsize=16)
def _storage_for(url: str, options: str) -> Storage:
    return Storage(url, **orjson.loads(options))


def get_storage(settings: Settings) -> Storage:
    """The process-wide :class:`Storage` for ``settings.storage_url`` (cached per URL and
    options)."""
    url = settings.storage_url
    options = orjson.dumps(settings.storage_options(url), option=orjson.OPT_SORT_KEYS).decode()
    return _storage_for(url, options)
