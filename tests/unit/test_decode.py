"""decode_body: BOM, header, <meta>, detection, UTF-8 — right for real legacy pages."""

from __future__ import annotations

import codecs
import time

import pytest

from shoal.fetch import FetchResponse
from shoal.fetch._decode import ascii_as_utf8, charset_of, content_type_of, decode_body
from tests.sites.hostile import ENC_PAGES, EXPECTED_TEXT


@pytest.mark.parametrize("path", sorted(ENC_PAGES))
def test_every_encoding_page_decodes_to_its_text(path: str) -> None:
    body, content_type = ENC_PAGES[path]
    text, _ = decode_body(body, content_type)
    assert text == EXPECTED_TEXT[path]


@pytest.mark.parametrize(
    ("path", "encoding"),
    [
        ("/enc/cp1252", "windows-1252"),  # header says ISO-8859-1: WHATWG reads windows-1252
        ("/enc/cp1252-undeclared", "windows-1252"),
        ("/enc/sjis-meta", "shift_jis"),
        ("/enc/cp1251-wrong-header", "windows-1251"),
        ("/enc/bom-utf16", "utf-16le"),
        ("/enc/sjis/undeclared", "shift_jis"),
        ("/enc/cp1251/undeclared", "windows-1251"),
        ("/enc/utf8", "utf-8"),
    ],
)
def test_reported_encoding(path: str, encoding: str) -> None:
    assert decode_body(*ENC_PAGES[path])[1] == encoding


@pytest.mark.parametrize(
    ("bom", "codec", "name"),
    [
        (codecs.BOM_UTF8, "utf-8", "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16be"),
        (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32le"),
        (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32be"),
    ],
)
def test_bom_wins_over_any_declaration(bom: bytes, codec: str, name: str) -> None:
    text = '<meta charset="windows-1251"><p>Grüße, Привет, 日本</p>'
    body = bom + text.encode(codec)
    assert decode_body(body, "text/html; charset=shift_jis") == (text, name)


def test_latin1_and_ascii_labels_mean_windows_1252() -> None:
    body = "“smart” quotes cost 5 €".encode("cp1252")
    for label in ("iso-8859-1", "latin1", "US-ASCII", '"ISO_8859-1"'):
        assert decode_body(body, f"text/html; charset={label}") == (
            "“smart” quotes cost 5 €",
            "windows-1252",
        )


def test_windows_1252_undefined_bytes_are_c1_controls_like_a_browser() -> None:
    assert decode_body(b"a\x81b\x9dc", "text/plain; charset=windows-1252") == (
        "a\x81b\x9dc",
        "windows-1252",
    )


def test_meta_http_equiv_and_xml_declaration() -> None:
    text = "Привет, мир! " * 20
    html = f'<meta http-equiv="content-type" content="text/html; charset=koi8-r"><p>{text}'
    assert decode_body(html.encode("koi8-r"), None) == (html, "koi8-r")
    xml = f'<?xml version="1.0" encoding="windows-1251"?><feed>{text}</feed>'
    assert decode_body(xml.encode("cp1251"), "application/xml") == (xml, "windows-1251")


def test_meta_naming_utf16_means_utf8() -> None:
    html = '<meta charset="utf-16"><p>Grüße</p>'
    assert decode_body(html.encode(), None) == (html, "utf-8")


def test_header_wins_over_meta_when_it_decodes() -> None:
    html = '<meta charset="utf-8"><p>Привет</p>'
    body = html.encode("cp1251")
    assert decode_body(body, "text/html; charset=windows-1251") == (html, "windows-1251")


def test_utf8_declared_as_latin1_is_read_as_utf8() -> None:
    # The common server default "charset=ISO-8859-1" on a UTF-8 page.
    html = "<p>Grüße aus Köln — 5 €</p>"
    assert decode_body(html.encode(), "text/html; charset=iso-8859-1") == (html, "utf-8")


def test_mostly_utf8_with_a_stray_byte_stays_utf8() -> None:
    body = "Grüße aus Köln, Привет. ".encode() * 5 + b"\x93quoted\x94"
    text, encoding = decode_body(body, "text/html; charset=utf-8")
    assert encoding == "utf-8"
    assert text.startswith("Grüße aus Köln, Привет.") and text.count("\ufffd") == 2
    assert decode_body(body, None)[1] == "utf-8"


def test_utf8_cut_mid_character_at_the_end_is_still_utf8() -> None:
    body = ("Привет, мир! " * 10).encode()[:-1] + "ж".encode()[:1]
    text, encoding = decode_body(body, None)
    assert encoding == "utf-8" and text.startswith("Привет") and text.endswith("\ufffd")


def test_unknown_label_is_ignored() -> None:
    assert decode_body(b"<p>plain</p>", "text/html; charset=no-such-thing") == (
        "<p>plain</p>",
        "utf-8",
    )


def test_binary_never_raises() -> None:
    text, encoding = decode_body(bytes(range(256)) * 10, "image/png")
    assert isinstance(text, str) and encoding


def test_empty_body() -> None:
    assert decode_body(b"", None) == ("", "utf-8")
    assert decode_body(b"", "text/html; charset=windows-1252") == ("", "windows-1252")


def test_detection_is_bounded_on_large_legacy_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detector sees a bounded sample of a big page, whatever its size (its cost grows
    with its input); the whole page is then decoded with what it found."""
    from shoal.fetch import _decode

    seen: list[int] = []
    detect = _decode.from_bytes

    def spy(sample: bytes, *args: object, **kwargs: object) -> object:
        seen.append(len(sample))
        return detect(sample, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_decode, "from_bytes", spy)
    body, _ = ENC_PAGES["/enc/cp1251/undeclared"]
    big = body * 400  # ~300 KB, not valid UTF-8, no declaration
    text, encoding = decode_body(big, "text/html")
    assert encoding == "windows-1251" and text == EXPECTED_TEXT["/enc/cp1251/undeclared"] * 400
    assert seen and max(seen) <= _decode._DETECT_BYTES < len(big)


def test_fast_path_valid_utf8_costs_about_one_decode() -> None:
    body = (EXPECTED_TEXT["/enc/utf8"] * 30).encode()  # ~100 KB
    assert decode_body(body, "text/html")[1] == "utf-8"
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        body.decode("utf-8")
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        decode_body(body, "text/html")
    ours = time.perf_counter() - t0
    assert ours < plain * 3 + 0.01


def test_content_type_helpers() -> None:
    assert content_type_of("Text/HTML; charset=UTF-8") == "text/html"
    assert content_type_of(None) == ""
    assert charset_of('text/html; Charset="Shift_JIS"') == "Shift_JIS"
    assert charset_of("text/html") is None


@pytest.mark.parametrize(
    ("content", "content_type", "same"),
    [
        ("<p>caf\u00e9</p>".encode(), "text/html; charset=utf-8", True),
        (b"<p>plain</p>", "text/html", True),
        (codecs.BOM_UTF8 + b"<p>bom</p>", "text/html", False),
        ("<p>caf\u00e9</p>".encode("cp1252"), "text/html; charset=windows-1252", False),
    ],
)
def test_response_utf8_is_the_body_only_when_it_already_was_utf8(
    content: bytes, content_type: str, same: bool
) -> None:
    text, encoding = decode_body(content, content_type)
    resp = FetchResponse(
        url="http://x/",
        final_url="http://x/",
        status=200,
        headers={},
        content=content,
        text=text,
        content_type="text/html",
        elapsed_ms=1,
        attempts=1,
        encoding=encoding,
    )
    assert (resp.utf8 is content) is same
    if resp.utf8 is not None:
        assert resp.utf8.decode() == text


_ASCII = b"<html><head><title>t</title></head><body><p>plain</p></body></html>"


@pytest.mark.parametrize(
    ("content", "content_type", "lazy"),
    [
        (_ASCII, "text/html", True),
        (_ASCII, "text/html; charset=utf-8", True),
        (_ASCII, "text/html; charset=UTF8", True),
        (b'<meta charset="utf-8">' + _ASCII, None, True),
        (_ASCII, "text/html; charset=windows-1252", False),  # labelled windows-1252
        (b'<meta charset="windows-1251">' + _ASCII, "text/html", False),
        (_ASCII, "text/html; charset=iso-2022-jp", False),
        (b"\x1b$B$3$s$K$A$O\x1b(B", "text/html", False),  # ISO-2022-JP is 7-bit
        (b'<meta charset="utf-16">' + _ASCII, None, True),  # WHATWG: an ASCII meta is UTF-8
        ("<p>caf\u00e9</p>".encode(), "text/html; charset=utf-8", False),  # not ASCII
        (codecs.BOM_UTF8 + _ASCII, "text/html", False),
    ],
)
def test_ascii_as_utf8_agrees_with_decode_body(
    content: bytes, content_type: str | None, lazy: bool
) -> None:
    """What the engine skips decoding is exactly what decode_body reads as ASCII UTF-8."""
    assert ascii_as_utf8(content, content_type) is lazy
    if lazy:
        assert decode_body(content, content_type) == (content.decode("ascii"), "utf-8")
        resp = FetchResponse(
            url="http://x/",
            final_url="http://x/",
            status=200,
            headers={},
            content=content,
            text=None,
            content_type="text/html",
            elapsed_ms=1,
            attempts=1,
            encoding="utf-8",
        )
        assert resp.text == content.decode("ascii")
        assert resp.utf8 is content
