#!/usr/bin/env python3
"""Wikitext -> plain text, side by side: Refinery's converter (corpora/wikitext.py) against mwparserfromhell.

    pip install mwparserfromhell   # not a Refinery dependency: only this benchmark uses it
    python tests/benchmarks/bench_wikitext.py [--repeat 3]             # pages/s and MB/s
    python tests/benchmarks/bench_wikitext.py --quality /tmp/wikitext   # defect counts, side-by-side sample

Pages: every article the Wikipedia reader turns into a document from the four dumps of shared/data/wikipedia
(redirects and other namespaces skipped as the reader skips them), their wikitext captured in the reader itself.

Contenders, each over the wikitext of every page (in memory), the order rotating between rounds:
  anchor      the reader over the four dumps with the conversion replaced by nothing (bz2, UTF-16 transcoding,
              page cutting, XML parsing, Arrow batches): what a read costs besides the converter
  ours        corpora.wikitext.to_plain_text
  mwp         mwparserfromhell.parse(w).strip_code(): the library as documented
  mwp+rules   mwp with what a user would add to get article text, before strip_code: remove <ref>, <references>,
              <gallery>, <imagemap>, <timeline> and table tags ({| |} and <table>), links to the namespaces the
              reader hides (File, Image, Media, Category and the dump's local names for them; `[[:Category:X]]`
              kept) and interlanguage links, pruned from the parse tree in one walk
  mwp parse   mwparserfromhell.parse alone: the floor of anything built on its parse tree
Reported: median seconds, pages/s and MB/s (of wikitext as UTF-8) of each, and the load average before and after.

--quality DIR counts, on every page: leftover markup in the output (the regexes of DEFECTS; lines holding a
LaTeX command are exempt from `{{ }}` and `|`, which a kept <math> formula may hold), reference text that leaks
(a run of a <ref>'s own words in the output, not found outside references), and what is lost: plain-text runs of
prose lines (`prose runs`: text every converter must keep as written), the words of inline templates the rendered
page shows (`{{convert|5|km}}`, `{{lang|fr|…}}`, `{{lang-xx|…}}`, `{{nowrap|…}}`) and <math> formulas. Spacing
before punctuation is set aside in these comparisons. It writes DIR/<page>.{wiki,ours,mwp,mwp+rules}.txt for the
SAMPLE pages and DIR/defects.tsv (one line per page and converter).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "wikipedia"
# Pages read side by side: infoboxes, references, inline templates, nested links, wikitables, math, lists, bg.
SAMPLE = ["Albert Einstein", "Anarchism", "Alabama", "Animal Farm", "Apollo", "Alberta",
          "Constructive vote of no confidence", "Academy Award for Best Production Design", "Analysis of variance",
          "Albedo", "List of anthropologists", "Aberdeen (disambiguation)", "Abraham Lincoln", "ASCII",
          "Григориански календар", "Article1"]
_DROPPED_TAGS = frozenset({"ref", "references", "gallery", "imagemap", "timeline", "table"})
_INTERLANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z]+)*")


class Page(NamedTuple):
    title: str
    wikitext: str
    hidden: frozenset[str]  # link namespaces to drop, the dump's local names included (as the reader passes)


def read_pages() -> list[Page]:
    """Every document of the four dumps, in the reader's order: the reader's own conversion is swapped for a
    recorder, so the pages are exactly those it converts, with what it passes the converter."""
    seen: list[tuple[str, frozenset[str]]] = []
    titles = [t for docs in read_dumps(lambda w, hidden: seen.append((w, hidden)) or "") for t in docs]
    return [Page(title, *converted) for title, converted in zip(titles, seen, strict=True)]


def read_dumps(convert: Callable[[str, frozenset[str]], str]) -> list[list[str]]:
    """The titles of each dump's documents, read by the Wikipedia reader with `convert` as its converter."""
    from refinery.corpora.readers import ReadTask, wikipedia

    original, wikipedia.to_plain_text = wikipedia.to_plain_text, convert
    try:
        return [[title for batch in wikipedia.WikipediaReader().read(ReadTask("wikipedia", str(dump), dump.name))
                 for title in batch.documents.column("title").to_pylist()] for dump in sorted(DATA.iterdir())]
    finally:
        wikipedia.to_plain_text = original


def ours(wikitext: str, hidden: frozenset[str]) -> str:
    from refinery.corpora.wikitext import to_plain_text

    return to_plain_text(wikitext, hidden)


def mwp(wikitext: str, hidden: frozenset[str]) -> str:
    return _mwp_parse(wikitext).strip_code()


def mwp_rules(wikitext: str, hidden: frozenset[str]) -> str:
    code = _mwp_parse(wikitext)
    _prune(code, hidden)
    return code.strip_code()


def _mwp_parse(wikitext: str):  # -> mwparserfromhell.wikicode.Wikicode, imported only when the library is timed
    import mwparserfromhell

    return mwparserfromhell.parse(wikitext)


def _prune(code, hidden: frozenset[str]) -> None:
    """Drop the nodes mwp_rules removes from `code` and everything under it, in one walk (Wikicode.remove per
    node searches the whole tree each time: about twice as slow on these pages, with the same output)."""
    from mwparserfromhell.nodes import Tag, Template, Wikilink

    def dropped(node) -> bool:
        if isinstance(node, Tag):
            return str(node.tag).strip().lower() in _DROPPED_TAGS
        if not isinstance(node, Wikilink):
            return False
        title = str(node.title).strip()
        namespace, colon, _ = title.partition(":")
        namespace = namespace.strip().lower()
        return bool(colon) and not title.startswith(":") and (namespace in hidden or
                                                              bool(_INTERLANGUAGE.fullmatch(namespace)))

    code.nodes = [node for node in code.nodes if not dropped(node)]
    for node in code.nodes:
        if not isinstance(node, Template):  # strip_code drops templates whole
            for child in node.__children__():
                _prune(child, hidden)


CONVERTERS: dict[str, Callable[[str, frozenset[str]], str]] = {"ours": ours, "mwp": mwp, "mwp+rules": mwp_rules}


# --- speed ---------------------------------------------------------------------------------------------


def speed(repeat: int) -> None:
    pages = read_pages()
    mb = sum(len(page.wikitext.encode("utf-8")) for page in pages) / 1e6
    print(f"{len(pages)} pages, {mb:.2f} MB of wikitext; cpus: {os.cpu_count()}; load before: {_load()}", flush=True)
    contenders: dict[str, Callable[[], int]] = {"anchor": lambda: sum(map(len, read_dumps(lambda w, h: "")))}
    for name, convert in CONVERTERS.items():
        contenders[name] = lambda convert=convert: len([convert(page.wikitext, page.hidden) for page in pages])
    # Each tree is dropped at once, as in the others: 121 live trees would time the garbage collector instead.
    contenders["mwp parse"] = lambda: sum(_mwp_parse(page.wikitext) is not None for page in pages)
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            started = time.perf_counter()
            converted = contenders[name]()
            times[name].append(time.perf_counter() - started)
            assert converted == len(pages), (name, converted)
            print(f"  round {round_ + 1} {name:<10} {times[name][-1]:7.2f} s", flush=True)
    print(f"load after: {_load()}")
    base = statistics.median(times["ours"])
    print(f"\n{'contender':<10} {'median s':>9} {'pages/s':>9} {'MB/s':>7} {'vs ours':>8}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<10} {median:9.2f} {len(pages) / median:9,.1f} {mb / median:7.2f} {base / median:7.2f}x")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- quality -------------------------------------------------------------------------------------------

_LATEX_LINE = re.compile(r"\\[A-Za-z]+")  # ours keeps <math> as LaTeX, whose braces are not template residue
DEFECTS: dict[str, re.Pattern] = {
    "link [[ ]]": re.compile(r"\[\[|\]\]"),
    "template {{ }}": re.compile(r"\{\{|\}\}"),
    "table markup": re.compile(r"^[ \t]*(?:\{\||\|\}|[|!])|\|\||\b(?:colspan|rowspan|style|class|align|bgcolor|"
                               r"width|cellpadding)\s*=|wikitable", re.M | re.I),
    "template params (| key =)": re.compile(r"^[ \t]*\|?[ \t]*[a-z_]+[0-9]*[ \t]*=[ \t]", re.M),
    "file/category": re.compile(r"\b(?:thumb|thumbnail|frameless|upright|\d+px)\s*\||"
                                r"\b(?:Category|File|Image|Категория|Файл|Картинка):"),
    "stray |": re.compile(r"\|"),
    "heading =": re.compile(r"^=+[^=\n]*=+[ \t]*$", re.M),
    "quotes ''": re.compile(r"''"),
    "html tag": re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^>\n]*>"),
    "entity": re.compile(r"&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);"),
    "magic word": re.compile(r"__[A-Z]+__"),
    "empty ( ) or (;": re.compile(r"\([\s,;:]*\)|\([ \t]*[,;:]"),
}
_REF = re.compile(r"<ref\b[^>/]*>(.*?)</ref\s*>", re.S | re.I)
_NOT_PROSE = re.compile(r"<(ref|math|nowiki|timeline|gallery|imagemap|score|syntaxhighlight|source|pre)\b(?:[^>]*/>|"
                        r"[^>]*>.*?</\1\s*>)", re.S | re.I)
_MATH = re.compile(r"<math\b[^>]*>(.*?)</math\s*>", re.S | re.I)
# The words of inline templates whose rendering is their argument: {{convert|5|km}}, {{lang|fr|…}}, {{lang-fr|…}},
# {{nowrap|…}}: the rendered page shows them.
_INLINE_WORDS = re.compile(
    r"\{\{\s*(?:convert|cvt|nowrap|lang\s*\|[^|{}]*|lang-[\w-]+)\s*\|\s*([^|{}=]+?)\s*(?:\||\}\})", re.I)
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_INNER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_MARKUP = re.compile(r"\[\[|\]\]|\||'{2,}|<[^>]*>|\[[a-z]+://[^\]]*\]|&[a-zA-Z#0-9]+;|\{\{|\}\}")
_SPACE = re.compile(r"\s+")
_PIPED_TARGET = re.compile(r"\[\[[^\[\]|]*\|")  # [[target|label]]: only the label is text
# Compared with spacing and edge punctuation set aside, so tidying "word ." or "( ; born" is no loss.
_SPACE_PUNCTUATION = re.compile(r"\s+(?=[,.;:)])|(?<=\()\s+")
_NAMESPACED_LINK = re.compile(r"\[\[[^\]|\n]*:")  # File:, Category:, interwiki: not running text
_LINK_EDGE = re.compile(r"\[\[|\]\]")


def defects(wikitext: str, text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        latex = _LATEX_LINE.search(line)  # braces and bars of a kept LaTeX formula are not wiki markup
        for name, pattern in DEFECTS.items():
            if not (latex and name in ("template {{ }}", "stray |")):
                counts[name] += len(pattern.findall(line))
    flat = _flat(text)
    uncommented = _COMMENT.sub("", wikitext)
    outside_refs = _flat(_REF.sub("|", uncommented))  # a run also found there may rightly be kept
    counts["ref text leaked"] = sum(run in flat and run not in outside_refs
                                    for ref in _REF.findall(uncommented) for run in _plain_runs(ref))
    prose = _prose_lines(uncommented)
    for key, wanted in (("prose runs", [run for line in prose for run in _plain_runs(_cut_templates(line))]),
                        ("inline template words", [_flat(w) for line in prose for w in _INLINE_WORDS.findall(line)
                                                   if not _MARKUP.search(w) and any(c.isalnum() for c in w)]),
                        ("math formulas", [_flat(m).strip() for m in _MATH.findall(uncommented) if m.strip()])):
        counts[key] = len(wanted)
        counts[f"{key} lost"] = sum(want not in flat for want in wanted)
    return counts


def _prose_lines(wikitext: str) -> list[str]:
    """Lines of running text: outside templates and tables (tracked across lines), not list, heading or table
    lines. Namespaced links (files with their captions, categories, interwiki) and elements that are not running
    text (references, math, nowiki, timelines, galleries) are cut out first, each leaving a `|` (a cut between
    runs: what a converter writes in its place is its own business); link targets go, link labels stay."""
    lines, depth, in_table = [], 0, 0
    for line in _without_namespaced_links(_NOT_PROSE.sub("|", wikitext)).splitlines():
        stripped = line.strip()
        in_table += stripped.startswith("{|") - stripped.startswith("|}")
        at_start = depth
        depth = max(0, depth + line.count("{{") - line.count("}}"))
        if at_start or depth or in_table > 0 or not stripped or stripped[0] in "|!{=*#:;<":
            continue
        lines.append(_PIPED_TARGET.sub("[[", line))
    return lines


def _without_namespaced_links(text: str) -> str:
    """`text` with each namespaced link (a file and its caption, which may span lines and hold links) cut out."""
    parts, settled = [], 0
    for start in (m.start() for m in _NAMESPACED_LINK.finditer(text)):
        if start < settled:
            continue  # inside a link already cut
        depth, at = 0, start
        for edge in _LINK_EDGE.finditer(text, start):
            depth += 1 if edge.group() == "[[" else -1
            at = edge.end()
            if depth == 0:
                break
        parts.append(text[settled:start] + "|")
        settled = at if depth == 0 else start + 2
    return "".join(parts) + text[settled:]


def _cut_templates(line: str) -> str:
    while _INNER_TEMPLATE.search(line):
        line = _INNER_TEMPLATE.sub("|", line)
    return line


def _plain_runs(line: str) -> list[str]:
    """The pieces of `line` between markup, 30 characters or more: text every converter must keep as is."""
    return [run for piece in _MARKUP.split(line) if len(run := _flat(piece).strip(" ,.;:()")) >= 30]


def _flat(text: str) -> str:
    return _SPACE_PUNCTUATION.sub("", _SPACE.sub(" ", text))


def quality(out: Path) -> None:
    pages = read_pages()
    out.mkdir(parents=True, exist_ok=True)
    totals = {name: Counter() for name in CONVERTERS}
    pages_with = {name: Counter() for name in CONVERTERS}
    measures = [*DEFECTS, "ref text leaked", *(f"{m}{lost}" for m in ("prose runs", "inline template words",
                                                                       "math formulas") for lost in ("", " lost"))]
    rows = ["page\tconverter\t" + "\t".join([*measures, "chars"])]
    for title, wikitext, hidden in pages:
        sampled = title in SAMPLE
        stem = re.sub(r"\W+", "_", title).strip("_")
        if sampled:
            (out / f"{stem}.wiki.txt").write_text(wikitext, encoding="utf-8")
        for name, convert in CONVERTERS.items():
            text = convert(wikitext, hidden)
            counts = defects(wikitext, text)
            counts["chars"] = len(text)
            totals[name].update(counts)
            pages_with[name].update(key for key, n in counts.items() if n)
            rows.append(f"{title}\t{name}\t" + "\t".join(str(counts[k]) for k in rows[0].split("\t")[2:]))
            if sampled:
                (out / f"{stem}.{name}.txt").write_text(text, encoding="utf-8")
    (out / "defects.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(pages)} pages; sample of {len(SAMPLE)} written to {out}; totals (pages affected):\n")
    print(f"{'defect':<28}" + "".join(f"{name:>18}" for name in CONVERTERS))
    for key in rows[0].split("\t")[2:]:
        print(f"{key:<28}" + "".join(f"{f'{totals[n][key]:,} ({pages_with[n][key]})':>18}" for n in CONVERTERS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--quality", type=Path, metavar="DIR", help="count defects, write the sample to DIR")
    args = parser.parse_args()
    if args.quality:
        quality(args.quality)
    else:
        speed(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
