"""MediaWiki XML dumps (`*-pages-articles*.xml.bz2`, also plain or gzipped): one document per article.

The decompressed stream is cut into `<page>…</page>` pieces as it arrives, so at most one page is ever in
memory, and each page is parsed on its own with ElementTree. The cut is exact for MediaWiki exports: a `<`
inside text is always escaped, so `<page>` and `</page>` only occur as tags. Parsing page by page is what lets
one broken page be quarantined while the pages around it are read. A dump in UTF-16 (or any encoding its
BOM or XML declaration names) is transcoded to UTF-8 on the fly.

- `id`: `<dbname>:<page id>` (`enwiki:12`) from the dump's siteinfo; the bare page id when it has none.
- `url`: the siteinfo base URL's folder plus the title with underscores; null without siteinfo.
- `title`, `revision_timestamp` (UTC, of the page's last revision): typed columns.
- `text`: the wikitext as plain text (corpora.wikitext). `position`: the page's ordinal in the dump, from 0.
- Skipped, counted by reason: `redirect`, `other_namespace` (not the main namespace 0), `not_wikitext`.
- Quarantined with the page's XML (as UTF-8): `malformed_xml`, `missing_title`, `missing_text`,
  `unterminated_page` (a `<page>` with no `</page>` before the next one), `truncated_page` (the file ends
  inside a page), `truncated_stream` (the compressed stream is cut off) and `corrupt_bz2` / `corrupt_gzip`
  (bytes that do not decompress: a corrupt stream, garbage after the dump). Every page before the damage is
  kept, and reading goes on where decompression resumes (the next stream of a multistream dump).
"""

from __future__ import annotations

import codecs
import itertools
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from refinery.corpora.readers import register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    Damaged,
    InputError,
    ReadBatch,
    Reader,
    ReadTask,
    StreamBreak,
    decompressed,
)
from refinery.corpora.records import DOCUMENT_SCHEMA, document_table, position_id, quarantine_table
from refinery.corpora.wikitext import HIDDEN_LINK_NAMESPACES, to_plain_text

SCHEMA = DOCUMENT_SCHEMA.append(pa.field("title", pa.string())).append(
    pa.field("revision_timestamp", pa.timestamp("s", tz="UTC"))
)

_PAGE_OPEN, _PAGE_CLOSE = b"<page>", b"</page>"
_CHUNK_BYTES = 1 << 20
_HEADER_LIMIT = 1 << 20  # a real <siteinfo> is a few KB
# Dumps from before 2010 mark redirects only in the text.
_REDIRECT_TEXT = re.compile(r"\s*#redirect\b", re.I)
_DECLARED_ENCODING = re.compile(rb"<\?xml[^>]*?encoding=[\"']([A-Za-z0-9._-]+)")
# Namespaces whose links show no text: Media (-2), File (6), Category (14), by their local names.
_HIDDEN_NAMESPACE_KEYS = ("-2", "6", "14")
# MediaWiki leaves these unescaped in its page URLs.
_URL_SAFE = ";:@$!*(),/~"


@register
class WikipediaReader(Reader):
    """MediaWiki XML dumps: one document per article.

    One task per dump (the default plan): positions are page ordinals, which only a pass from the start can
    count.
    """

    name = "wikipedia"
    suffixes = (".xml.bz2", ".xml", ".xml.gz")
    schema = SCHEMA

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        dump = _DumpStream(task.path)
        pages = _PageCollector(task)
        position = 0
        for piece in _pieces(dump):
            if isinstance(piece, Damaged):  # the pages before the damage are kept, and reading goes on after it
                pages.quarantine(position, piece.reason, piece.raw)
                position += 1
                continue
            kind, raw = piece
            if kind == "header":
                if raw.strip() and b"<mediawiki" not in raw and not dump.damaged:
                    raise InputError(f"{task.path} is not a MediaWiki XML dump (no <mediawiki> element before its "
                                     "first page); give this input its own `format:`")
                pages.site = _Site.from_header(raw)
                continue
            if kind == "page":
                pages.add(raw, position)
            elif kind == "unterminated":
                pages.quarantine(position, "unterminated_page: no </page> before the next <page>", raw)
            else:  # what follows the last page: the end of the dump, or a page it ends inside of
                started = raw.find(_PAGE_OPEN)
                if started >= 0:
                    pages.quarantine(position, "truncated_page: the dump ends inside this page", raw[started:])
                break
            position += 1
            if len(pages) >= batch_rows:
                yield pages.flush()
        yield pages.flush()


# --- the byte stream -----------------------------------------------------------------------------------


class _DumpStream:
    """The dump's bytes as UTF-8 chunks: decompressed, and transcoded when its BOM or declaration says so.

    Where the compressed stream is damaged, its StreamBreak comes between the chunks (`damaged` is then set), and
    the chunks go on where decompression could resume (a multistream dump, trailing garbage).
    """

    def __init__(self, path: str):
        self.path = path
        self.damaged = False

    def __iter__(self) -> Iterator[bytes | StreamBreak]:
        raw = decompressed(self.path)
        head, held = b"", []
        for chunk in raw:  # enough bytes to see a BOM or the XML declaration
            if isinstance(chunk, StreamBreak):
                held.append(chunk)
                break
            head += chunk
            if len(head) >= 256:
                break
        encoding, bom = _sniff_encoding(head, self.path)
        # surrogateescape carries undecodable bytes through as themselves, so the page holding them fails to parse
        # and is quarantined rather than altered.
        decoder = None if encoding == "utf-8" else codecs.getincrementaldecoder(encoding)("surrogateescape")
        for chunk in itertools.chain((head[bom:],), held, raw):
            if isinstance(chunk, StreamBreak):
                self.damaged = True
                yield chunk
            else:
                yield chunk if decoder is None else decoder.decode(chunk).encode("utf-8", "surrogateescape")
        if decoder is not None:
            yield decoder.decode(b"", final=True).encode("utf-8", "surrogateescape")


def _sniff_encoding(head: bytes, path: str) -> tuple[str, int]:
    """(codec name, BOM length): from a BOM, a UTF-16 '<' without one, or the XML declaration; else UTF-8."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                      (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return name, len(bom)
    if head.startswith(b"<\x00"):
        return "utf-16-le", 0
    if head.startswith(b"\x00<"):
        return "utf-16-be", 0
    declared = _DECLARED_ENCODING.match(head)
    if not declared:
        return "utf-8", 0
    try:
        name = codecs.lookup(declared.group(1).decode("ascii")).name
    except LookupError:
        raise InputError(f"{path} declares the encoding '{declared.group(1).decode('ascii')}', which Python "
                         "cannot decode; convert the dump to UTF-8 (e.g. with iconv)") from None
    # A declaration readable as ASCII rules out UTF-16/32, whatever it says.
    return ("utf-8", 0) if name.startswith(("utf-16", "utf-32", "utf-8")) else (name, 0)


def _pieces(chunks: Iterable[bytes | StreamBreak]) -> Iterator[tuple[str, bytes] | Damaged]:
    """Cut the UTF-8 stream into ("header", bytes before the first page), ("page", …), ("unterminated", …)
    and, last, ("rest", what follows the last whole page); a break of the stream is a Damaged piece, whose raw
    bytes are the page it cut short (or else the compressed bytes passed over), and reading goes on at the next
    `<page>` after it."""
    buffer, header_seen = b"", False
    for chunk in chunks:
        if isinstance(chunk, StreamBreak):
            started = buffer.find(_PAGE_OPEN)
            if not header_seen:
                yield "header", buffer[: max(started, 0)] if started >= 0 else buffer
                header_seen = True
            yield Damaged(0, chunk.reason, buffer[started:] if started >= 0 else chunk.raw)
            buffer = b""
            continue
        buffer += chunk
        consumed = 0
        while True:
            start = buffer.find(_PAGE_OPEN, consumed)
            if start < 0 and not header_seen and len(buffer) > _HEADER_LIMIT:
                yield "header", buffer  # so much before any page: not a dump, and the caller says so
                header_seen = True
            if start < 0:
                if header_seen:  # only whitespace between pages; keep what may be the head of a <page>
                    consumed = max(consumed, len(buffer) - len(_PAGE_OPEN) + 1)
                break
            if not header_seen:
                yield "header", buffer[:start]
                header_seen = True
            end = buffer.find(_PAGE_CLOSE, start)
            following = buffer.find(_PAGE_OPEN, start + len(_PAGE_OPEN), end if end >= 0 else len(buffer))
            if following >= 0:
                yield "unterminated", buffer[start:following]
                consumed = following
            elif end >= 0:
                consumed = end + len(_PAGE_CLOSE)
                yield "page", buffer[start:consumed]
            else:  # the page goes on in the next chunk
                consumed = start
                break
        buffer = buffer[consumed:]
    if not header_seen:
        yield "header", buffer
        buffer = b""
    yield "rest", buffer


# --- pages ---------------------------------------------------------------------------------------------


@dataclass
class _Site:
    """What a dump's <siteinfo> says: the id prefix, the URL base, and local namespace names."""

    dbname: str | None = None
    url_base: str | None = None  # "https://en.wikipedia.org/wiki/"
    namespaces: dict[str, str] = field(default_factory=dict)  # lower-case local name -> key
    hidden_namespaces: frozenset[str] = HIDDEN_LINK_NAMESPACES

    @classmethod
    def from_header(cls, header: bytes) -> _Site:
        start, end = header.find(b"<siteinfo>"), header.find(b"</siteinfo>")
        if start < 0 or end < 0:
            return cls()
        try:
            siteinfo = _strip_namespaces(ET.fromstring(header[start : end + len(b"</siteinfo>")]))
        except ET.ParseError:
            return cls()
        base = siteinfo.findtext("base")
        namespaces = {(ns.text or "").strip().lower(): ns.get("key", "") for ns in siteinfo.iter("namespace")}
        local_hidden = {name for name, key in namespaces.items() if key in _HIDDEN_NAMESPACE_KEYS and name}
        return cls(
            dbname=(siteinfo.findtext("dbname") or "").strip() or None,
            url_base=base.rsplit("/", 1)[0] + "/" if base and "/" in base else None,
            namespaces={name: key for name, key in namespaces.items() if name},
            hidden_namespaces=HIDDEN_LINK_NAMESPACES | local_hidden,
        )

    def namespace_of(self, title: str) -> str:
        """The namespace key of a title, for old dumps whose pages have no <ns>."""
        prefix, colon, _ = title.partition(":")
        return self.namespaces.get(prefix.strip().lower(), "0") if colon else "0"


def _strip_namespaces(element: ET.Element) -> ET.Element:
    """Drop the export schema's XML namespace from tags (siteinfo is parsed inside <mediawiki xmlns=…>)."""
    for node in element.iter():
        node.tag = node.tag.rsplit("}", 1)[-1]
    return element


class _PageCollector:
    """Pages turned into Document rows, quarantine rows and skip counts, flushed as ReadBatches."""

    def __init__(self, task: ReadTask):
        self.task = task
        self.file_name = Path(task.path).name
        self.site = _Site()
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.urls: list[str | None] = []
        self.titles: list[str] = []
        self.timestamps: list[str | None] = []
        self.bad: list[tuple[str, str, str, int, str, bytes | None]] = []
        self.skipped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.ids) + len(self.bad)

    def quarantine(self, position: int, reason: str, raw: bytes | None, own_id: str | None = None) -> None:
        record_id = own_id or position_id(self.file_name, position)
        self.bad.append((record_id, self.task.source, self.task.path, position, reason, raw))

    def add(self, raw: bytes, position: int) -> None:
        """One `<page>…</page>`: a document, a skip by reason, or a quarantined page."""
        try:
            page = ET.fromstring(raw)
        except ET.ParseError as err:
            self.quarantine(position, f"malformed_xml: {err}", raw)
            return
        title = page.findtext("title")
        page_id = (page.findtext("id") or "").strip()
        own_id = (f"{self.site.dbname}:{page_id}" if self.site.dbname else page_id) if page_id else None
        if not title:
            self.quarantine(position, "missing_title: the page has no <title>", raw, own_id)
            return
        namespace = page.findtext("ns")
        if (namespace.strip() if namespace is not None else self.site.namespace_of(title)) != "0":
            self.skipped["other_namespace"] += 1
            return
        revisions = page.findall("revision")  # a history dump has many: the last is the page as it stands
        revision = revisions[-1] if revisions else ET.Element("revision")
        text = revision.find("text")
        wikitext = text.text if text is not None else None
        if page.find("redirect") is not None or (wikitext and _REDIRECT_TEXT.match(wikitext)):
            self.skipped["redirect"] += 1
            return
        if revision.findtext("model", "wikitext") != "wikitext":
            self.skipped["not_wikitext"] += 1
            return
        if not wikitext or text.get("deleted") is not None:
            what = "has no <text>" if text is None else "is deleted" if text.get("deleted") else "is empty"
            self.quarantine(position, f"missing_text: the last revision's text {what}", raw, own_id)
            return
        self.ids.append(own_id or position_id(self.file_name, position))
        self.texts.append(to_plain_text(wikitext, self.site.hidden_namespaces))
        self.titles.append(title)
        base = self.site.url_base
        self.urls.append(base + quote(title.replace(" ", "_"), safe=_URL_SAFE) if base else None)
        self.timestamps.append(revision.findtext("timestamp"))

    def flush(self) -> ReadBatch:
        """What was collected as a ReadBatch (documents in SCHEMA), and start afresh."""
        docs = document_table(self.ids, self.texts, self.task.source, self.urls)
        # A timestamp that is not MediaWiki's ISO form becomes null: the text is still good.
        timestamps = pc.strptime(pa.array(self.timestamps, pa.string()), format="%Y-%m-%dT%H:%M:%SZ", unit="s",
                                 error_is_null=True)
        columns = [*docs.columns, pa.array(self.titles, pa.string()), timestamps.cast(SCHEMA.field(-1).type)]
        batch = ReadBatch(pa.Table.from_arrays(columns, schema=SCHEMA), quarantine_table(self.bad),
                          len(self.ids) + len(self.bad), dict(sorted(self.skipped.items())))
        self._reset()
        return batch
