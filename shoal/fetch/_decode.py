"""Turning body bytes into text: BOM, header charset, ``<meta>`` charset, detection, UTF-8.

Names follow the WHATWG Encoding standard where it differs from Python's codecs: a page that
says ``iso-8859-1`` (or ``us-ascii``) is decoded as windows-1252, ``shift_jis`` as cp932,
``gb2312``/``gbk`` as gb18030, ``euc-kr`` as cp949. The undefined bytes of the windows-125x code
pages become the C1 control with the same number, as in a browser, so those never fail.
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

#: How much of the body the ``<meta>`` prescan and the detector look at.
_PRESCAN_BYTES = 4096
_DETECT_BYTES = 64 * 1024
#: Detector scores closer than this count as a tie.
_TIE = 0.01

_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE
)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]+?encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""")
#: UTF-32 first: its little-endian BOM starts with the UTF-16 one.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: Python codec name -> the codec a browser actually uses for that label.
_WHATWG = {
    "latin_1": "cp1252",
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
}
#: Labels browsers know that Python's codec registry does not (lower case).
_ALIASES = {
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "windows-874": "cp874",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "x-euc-jp": "euc_jp",
    "x-mac-roman": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "iso-8859-8-i": "iso8859-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
}
_LABELS = {
    "cp932": "shift_jis",
    "cp949": "euc-kr",
    "big5hkscs": "big5",
    "utf-16-le": "utf-16le",
    "utf-16-be": "utf-16be",
    "utf-32-le": "utf-32le",
    "utf-32-be": "utf-32be",
}
_C1_LENIENT = frozenset({"cp874", *(f"cp125{i}" for i in range(9))})
_C1_ERRORS = "shoal-c1"


def _c1_handler(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    byte = exc.object[exc.start]
    return (chr(byte) if 0x80 <= byte <= 0x9F else "\ufffd"), exc.start + 1


codecs.register_error(_C1_ERRORS, _c1_handler)


def content_type_of(header: str | None) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def charset_of(header: str | None) -> str | None:
    """The ``charset=`` parameter of a Content-Type header, if any."""
    if not header:
        return None
    for part in header.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


def ascii_as_utf8(content: bytes, content_type: str | None) -> bool:
    """Whether ``decode_body`` would answer ``(content as ASCII, "utf-8")``, known without
    decoding: the body is ASCII (and not 7-bit ISO-2022: no ESC byte), and neither the header
    nor a ``<meta>`` names a charset other than UTF-8. The engine then leaves the text to be
    decoded on first use (most pages are parsed from their bytes and never need it)."""
    if not content.isascii() or b"\x1b" in content:
        return False
    declared = _codec(charset_of(content_type))
    if declared is not None:
        return declared == "utf-8"
    return _prescan(content) in (None, "utf-8")


def decode_body(content: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode a body the way a browser would, never raising; returns ``(text, encoding)``.

    Order: BOM; the header charset; ``<meta charset>`` / ``http-equiv`` (or an XML declaration)
    in the first 4 KB; detection; UTF-8 with replacement. A declaration the bytes do not decode
    under is ignored (mis-declared pages are common), except that UTF-8 that is mostly valid
    keeps UTF-8 with replacement characters for the few bad bytes. A page declared as a
    single-byte legacy charset whose bytes are valid, non-ASCII UTF-8 is read as UTF-8: the
    reverse accident (real windows-1252 text that happens to be valid UTF-8) is vanishingly rare.
    Valid UTF-8 without any declaration costs one decode plus a 4 KB regex scan.
    """
    for bom, name in _BOMS:
        if content.startswith(bom):
            return content[len(bom) :].decode(name, "replace"), _label(name)

    declared = _codec(charset_of(content_type))
    if declared is not None:
        if declared in _C1_LENIENT and not content.isascii():
            text = _utf8_strict(content)
            if text is not None:
                return text, "utf-8"
        found = _try(content, declared)
        if found is not None:
            return found

    meta = _prescan(content)
    if meta is not None and meta != declared:
        found = _try(content, meta)
        if found is not None:
            return found

    text = _utf8_strict(content)
    if text is not None:
        return text, "utf-8"
    if _mostly_utf8(content):
        return content.decode("utf-8", "replace"), "utf-8"
    detected = _detect(content)
    if detected is not None:
        return _decode(content, detected), _label(detected)
    return content.decode("utf-8", "replace"), "utf-8"


def _codec(label: str | None) -> str | None:
    """The Python codec for an encoding label, WHATWG-mapped; ``None`` when unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    try:
        name = codecs.lookup(_ALIASES.get(label, label)).name
    except LookupError:
        return None
    return _WHATWG.get(name, name)


def _label(codec: str) -> str:
    """A readable, WHATWG-style name for a Python codec: ``cp1252`` -> ``windows-1252``."""
    if codec in _LABELS:
        return _LABELS[codec]
    if codec.startswith("cp12") or codec == "cp874":
        return "windows-" + codec[2:]
    if codec.startswith("iso8859"):
        return "iso-8859-" + codec.rsplit("-", 1)[-1].rsplit("_", 1)[-1]
    return codec.replace("_", "-")


def _prescan(content: bytes) -> str | None:
    """The encoding a ``<meta>`` tag or an XML declaration in the first 4 KB names."""
    head = content[:_PRESCAN_BYTES]
    m = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    if m is None:
        return None
    codec = _codec(m.group(1).decode("ascii", "replace"))
    # A meta tag readable as ASCII cannot be in UTF-16/32 (WHATWG: treat as UTF-8).
    if codec is not None and codec.startswith(("utf_16", "utf-16", "utf_32", "utf-32")):
        return "utf-8"
    return codec


def _try(content: bytes, codec: str) -> tuple[str, str] | None:
    """Decode strictly under ``codec`` (leniently for UTF-8 that is mostly valid)."""
    if codec in ("utf-8", "utf_8"):
        text = _utf8_strict(content)
        if text is None and _mostly_utf8(content):
            text = content.decode("utf-8", "replace")
        return None if text is None else (text, "utf-8")
    try:
        return content.decode(codec, _C1_ERRORS if codec in _C1_LENIENT else "strict"), _label(
            codec
        )
    except (UnicodeDecodeError, LookupError):
        return None


def _decode(content: bytes, codec: str) -> str:
    try:
        return content.decode(codec, _C1_ERRORS if codec in _C1_LENIENT else "replace")
    except LookupError:
        return content.decode("utf-8", "replace")


def _utf8_strict(content: bytes) -> str | None:
    """The text if ``content`` is valid UTF-8, allowing a sequence cut off at the very end."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(content) and exc.start >= len(content) - 3:
            try:
                return content[: exc.start].decode("utf-8") + "\ufffd"
            except UnicodeDecodeError:
                return None
        return None


def _mostly_utf8(content: bytes) -> bool:
    """True when valid multi-byte UTF-8 sequences outnumber the invalid bytes.

    Text in a legacy 8-bit encoding almost never forms valid UTF-8 sequences, so UTF-8 with a
    few stray bytes (a pasted windows-1252 quote) keeps UTF-8 instead of being re-detected.
    """
    text = content[:_DETECT_BYTES].decode("utf-8", "replace")
    bad = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return non_ascii - bad > bad


def _detect(content: bytes) -> str | None:
    """charset-normalizer's guess over a bounded sample, as a WHATWG-mapped codec."""
    sample = content[:_DETECT_BYTES]
    if len(content) > _DETECT_BYTES:
        # Cut after a '>' or newline so a multi-byte character is not split (neither byte can
        # be the trail byte of Shift_JIS, GBK, Big5 or EUC-*).
        cut = max(sample.rfind(b">"), sample.rfind(b"\n"))
        if cut > _DETECT_BYTES // 2:
            sample = sample[: cut + 1]
    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return None
    # Latin text often scores the same under windows-1250 and windows-1252 (they share most
    # letters); on a tie prefer windows-1252, by far the commonest legacy encoding on the web.
    for match in matches:
        if (
            "cp1252" in match.could_be_from_charset
            and match.chaos <= best.chaos + _TIE
            and match.coherence >= best.coherence - _TIE
        ):
            return "cp1252"
    return _codec(best.encoding)
