"""Bytes of a web page to text: the declared charset (BOM, HTTP header, <meta>), else detection.

Declared labels are read the way browsers read them (the WHATWG Encoding Standard): `gb2312` means GBK,
`iso-8859-1` means windows-1252, `shift_jis` means Microsoft's cp932, and so on; Python's codecs of the
same names are stricter subsets and would fail on pages that browsers show correctly.
"""

from __future__ import annotations

import codecs
import re

# Labels whose WHATWG decoder is a superset of the Python codec with the same name.
_WHATWG = {
    **dict.fromkeys(("gb2312", "gbk", "x-gbk", "chinese", "csgb2312", "csiso58gb231280", "gb_2312", "gb_2312-80",
                     "iso-ir-58", "cp936", "ms936", "windows-936", "gb18030"), "gb18030"),
    **dict.fromkeys(("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5"), "big5hkscs"),
    **dict.fromkeys(("shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "csshiftjis", "windows-31j", "ms932",
                     "cp932"), "cp932"),
    **dict.fromkeys(("euc-kr", "euc_kr", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "korean", "windows-949",
                     "cp949"), "cp949"),
    **dict.fromkeys(("iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "ascii", "us-ascii",
                     "cp819", "ibm819", "windows-1252", "x-cp1252", "cp1252"), "cp1252"),
    **dict.fromkeys(("iso-8859-9", "iso8859-9", "latin5", "l5", "windows-1254", "cp1254"), "cp1254"),
    **dict.fromkeys(("tis-620", "iso-8859-11", "windows-874", "cp874"), "cp874"),
}
# Codecs of one byte per character: a page in any other encoding decodes "without error" in these too.
_SINGLE_BYTE_PREFIXES = ("cp12", "cp874", "iso8859", "latin", "koi8", "mac", "cp437", "cp85", "cp86")

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">, in the page's head.
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]+)""", re.IGNORECASE)
_META_SCAN_BYTES = 8192
# A declared charset may leave a few broken bytes (a cut multi-byte character) and still be the right one.
_MAX_ERRORS_PER_BYTE = 1 / 1000


def python_codec(label: str | None) -> str | None:
    """The Python codec for a charset label as a browser reads it, or None for an unknown label."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if name in _WHATWG:
        return _WHATWG[name]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _is_single_byte(codec: str) -> bool:
    return codec.startswith(_SINGLE_BYTE_PREFIXES)


def _decode_as(data: bytes, codec: str) -> str | None:
    """`data` in `codec` if it fits: no error, or (for multi-byte codecs) very few; else None."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    text = data.decode(codec, "replace")
    return text if text.count("\ufffd") <= len(data) * _MAX_ERRORS_PER_BYTE else None


def _utf8(data: bytes) -> str | None:
    # Strict UTF-8 validation runs at memory speed, so it is cheap to know up front.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _detect(data: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes  # imported on first use: most pages never need it

    best = from_bytes(data).best()
    if best is not None and best.encoding:
        return data.decode(best.encoding, "replace"), best.encoding
    return data.decode("cp1252", "replace"), "cp1252"


def decode_page(data: bytes, http_charset: str | None = None, html: bool = True) -> tuple[str, str, str]:
    """Decode a page; returns (text, codec, how) where how is bom, http, meta, utf-8 or detected.

    Order: a byte-order mark, the HTTP charset, the <meta> charset (HTML only), valid UTF-8, detection.
    A declared single-byte charset is passed over when the bytes are valid UTF-8 with non-ASCII in them:
    servers that default to ISO-8859-1 in front of UTF-8 pages are common, while legacy text that happens
    to be valid multi-byte UTF-8 is vanishingly rare.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(codec, "replace"), codec, "bom"
    declared = [("http", python_codec(http_charset))]
    if html:
        match = _META_CHARSET.search(data, 0, _META_SCAN_BYTES)
        codec = python_codec(match.group(1).decode("ascii")) if match else None
        # A <meta> that could be read as ASCII is not UTF-16, whatever it says (WHATWG: read it as UTF-8).
        declared.append(("meta", "utf-8" if codec and codec.startswith("utf-16") else codec))
    utf8_text = _utf8(data)
    for how, codec in declared:
        if codec is None:
            continue
        if utf8_text is not None:
            if codec == "utf-8":
                return utf8_text, codec, how
            if _is_single_byte(codec) and not data.isascii():
                break  # UTF-8 under a legacy label
        text = _decode_as(data, codec)
        if text is not None:
            return text, codec, how
    if utf8_text is not None:
        return utf8_text, "utf-8", "utf-8"
    text, codec = _detect(data)
    return text, codec, "detected"
