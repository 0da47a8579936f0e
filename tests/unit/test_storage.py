import os

import pytest

from shoal.settings import Settings
from shoal.storage import Storage, get_storage


def test_url_joins_under_root(tmp_path):
    s = Storage(str(tmp_path))
    assert s.url("jobs", "job_1", "parts", "000003.parquet") == os.path.join(
        str(tmp_path), "jobs", "job_1", "parts", "000003.parquet"
    )
    assert s.local_path(s.url("a")) == os.path.join(str(tmp_path), "a")
    with pytest.raises(ValueError):
        s.url("jobs", "..", "etc")


def test_file_url_root(tmp_path):
    s = Storage(f"file://{tmp_path}")
    assert s.is_local
    assert s.url("x") == os.path.join(str(tmp_path), "x")


def test_write_bytes_atomic_replaces_and_leaves_no_temp(tmp_path):
    s = Storage(str(tmp_path))
    url = s.url("jobs", "j", "parts", "000001.parquet")
    s.write_bytes_atomic(url, b"one")
    s.write_bytes_atomic(url, b"second")
    with s.open(url) as fh:
        assert fh.read() == b"second"
    assert s.exists(url) and s.size(url) == 6
    assert os.listdir(os.path.dirname(url)) == ["000001.parquet"]


def test_list_glob_rm(tmp_path):
    s = Storage(str(tmp_path))
    for name in ("b.parquet", "a.parquet", "c.txt"):
        s.write_bytes_atomic(s.url("p", name), b"x")
    assert s.list(s.url("p")) == [s.url("p", n) for n in ("a.parquet", "b.parquet", "c.txt")]
    assert s.glob(s.url("p", "*.parquet")) == [s.url("p", "a.parquet"), s.url("p", "b.parquet")]
    assert s.list(s.url("missing")) == []
    s.rm(s.url("p", "c.txt"))
    s.rm(s.url("p", "c.txt"))  # missing is fine
    assert not s.exists(s.url("p", "c.txt"))
    s.rm(s.url("p"), recursive=True)
    assert not s.exists(s.url("p"))


def test_open_for_write_creates_folders(tmp_path):
    s = Storage(str(tmp_path))
    url = s.url("deep", "er", "f.bin")
    with s.open(url, "wb") as fh:
        fh.write(b"abc")
    assert s.size(url) == 3


def test_memory_filesystem_uses_temp_then_move():
    s = Storage("memory://shoal-test-root")
    assert not s.is_local and s.local_path(s.url("x")) is None
    url = s.url("jobs", "j", "f.bin")
    assert url.startswith("memory://") and url.endswith("/shoal-test-root/jobs/j/f.bin")
    s.write_bytes_atomic(url, b"hello")
    assert s.exists(url) and s.size(url) == 5
    assert s.list(s.url("jobs", "j")) == [url]
    s.write_bytes_atomic(url, b"again")  # tmp name + mv replaces it
    assert s.list(s.url("jobs", "j")) == [url] and s.size(url) == 5
    s.rm(s.url("jobs"), recursive=True)


def test_get_storage_cached_per_url(tmp_path):
    a = get_storage(Settings(results_url=str(tmp_path / "r1")))
    b = get_storage(Settings(results_url=str(tmp_path / "r1")))
    c = get_storage(Settings(results_url=str(tmp_path / "r2")))
    assert a is b and a is not c
