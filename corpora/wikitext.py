"""Wikitext to plain text: the words a reader of the rendered article sees, without the wiki's machinery.

Removed with their content: comments, `<ref>`s, templates and template parameters, tables, galleries,
file, image and category links, interlanguage links, magic words. A short list of inline templates whose
arguments are the sentence's own words is kept as those words (`{{convert|5|km|mi}}` -> "5 km",
`{{lang|fr|la vie}}` -> "la vie"), since dropping them would leave holes in sentences.

Kept as text: link labels (`[[target|label]]` -> label, `[[target]]` -> target), external-link labels,
section headings on their own line (a section left empty is dropped), list items ("- item", "1. item"),
and the literal content of `<nowiki>`, `<pre>`, `<math>`, `<syntaxhighlight>`. Bold and italic quotes and
HTML tags go; HTML entities are decoded; unbalanced `{{`, `}}`, `[[`, `]]` left by broken markup are dropped.

Nesting is resolved with stacks (templates, tables, links), never by one greedy regex, so a template inside
a template, or a file caption holding links, comes out whole.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator

# Link namespaces whose links are not text (an image, a category tag); a dump's local names are added.
HIDDEN_LINK_NAMESPACES = frozenset({"file", "image", "media", "category"})

# Private-use characters mark protected literal content and heading lines while the passes run.
_LITERAL_MARK = re.compile("\ue000(\\d+)\ue001")
_HEADING_MARK = "\ue002"

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_LITERAL = re.compile(r"<(nowiki|pre|math|chem|ce|syntaxhighlight|source)\b[^>]*?(?:/>|>(.*?)</\1\s*>)", re.S | re.I)
_DROPPED_ELEMENT = re.compile(
    r"<(ref|references|gallery|imagemap|timeline|score|graph|mapframe|maplink|templatedata|includeonly|hiero|"
    r"inputbox|categorytree)\b(?:[^>]*?/>|[^>]*>.*?</\1\s*>)",
    re.S | re.I,
)
_BRACE_RUN = re.compile(r"\{{2,}|\}{2,}")
_TEMPLATE_NAME = re.compile(r"[^|{}]*")
_ARG_TOKEN = re.compile(r"\{\{|\}\}|\[\[|\]\]|\|")
_NAMED_ARG = re.compile(r"^\s*[\w -]+?\s*=")
_TABLE_EDGE = re.compile(r"^[ \t:]*(?:(?P<open>\{\|)|\|\})", re.M)
_HTML_TABLE_EDGE = re.compile(r"<(?:(?P<open>table)\b[^>]*|/table\s*)>", re.I)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_INTERLANGUAGE_LINE = re.compile(r"^[ \t]*\[\[[a-z]{2,3}(?:-[a-z]+)*:[^\]\n]*\]\][ \t]*$", re.M)
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:|mailto:|news:|irc:|//)[^\s\[\]<>\"]*(?:[ \t]+([^\]\n]*))?\]", re.I)
_LINK_EDGE = re.compile(r"\[\[|\]\]")
_HEADING = re.compile(r"^(={1,6})[ \t]*(.+?)[ \t]*\1[ \t]*$", re.M)
_QUOTES = re.compile(r"'''''|'''|''")
_LINE_BREAK_TAG = re.compile(r"<(?:br|p|li|hr)\b[^>]*>|</(?:br|p)\s*>", re.I)
_HTML_TAG = re.compile(
    r"</?(?:div|span|small|big|sup|sub|center|s|u|i|b|em|strong|abbr|cite|q|var|code|tt|kbd|samp|font|p|li|"
    r"ul|ol|dl|dt|dd|blockquote|poem|ins|del|strike|mark|bdi|bdo|dfn|onlyinclude|noinclude|section|time|wbr|"
    r"caption|tr|td|th|nowiki)\b[^>]*>",
    re.I,
)
_STRAY_DELIMITER = re.compile(r"\{\{|\}\}|\[\[|\]\]")
_RULE_LINE = re.compile(r"^-{4,}$")
_LIST_ITEM = re.compile(r"^([*#:;]+)\s*(.*)$")
_SPACES = re.compile(r"  +")
# One space (runs are collapsed first): "needed {{citation needed}}." -> "needed ." -> "needed."
_SPACE_BEFORE_PUNCTUATION = re.compile(r" (?=[,.;)](?:\s|$))", re.M)
# What removed templates leave behind in a lead sentence: "Einstein ({{IPAc-en|..}}; 14 March" -> "(; 14 March".
_EMPTY_PARENS = re.compile(r"\([ \t,;:]*\)")
_OPENING_PUNCTUATION = re.compile(r"\([ \t]*(?:[,;:][ \t]*)+")
_BLANK_LINES = re.compile(r"\n\n\n+")


def to_plain_text(wikitext: str, hidden_namespaces: frozenset[str] = HIDDEN_LINK_NAMESPACES) -> str:
    """The plain text of a page's wikitext; `hidden_namespaces` are lower-case link prefixes to drop."""
    literals: list[str] = []

    def protect(match: re.Match) -> str:
        content = match.group(2)
        if not content:
            return ""
        # MediaWiki decodes entities inside <nowiki> and <pre>; math and code are shown as written.
        literals.append(html.unescape(content) if match.group(1).lower() in ("nowiki", "pre") else content)
        return f"\ue000{len(literals) - 1}\ue001"

    text = _COMMENT.sub("", wikitext.replace("\r\n", "\n"))
    text = _LITERAL.sub(protect, text)
    text = _DROPPED_ELEMENT.sub("", text)
    text = strip_templates(text)
    text = _drop_nested(text, _TABLE_EDGE)
    text = _drop_nested(text, _HTML_TABLE_EDGE)
    text = _MAGIC_WORD.sub("", text)
    text = _INTERLANGUAGE_LINE.sub("", text)
    text = _resolve_links(text, hidden_namespaces)
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _HEADING.sub(lambda m: f"{_HEADING_MARK}{len(m.group(1))}{m.group(2)}", text)
    text = _QUOTES.sub("", text)
    text = _LINE_BREAK_TAG.sub("\n", text)
    text = _HTML_TAG.sub("", text)
    text = _tidy(html.unescape(_STRAY_DELIMITER.sub("", text)))
    return _LITERAL_MARK.sub(lambda m: literals[int(m.group(1))], text)


# --- templates -----------------------------------------------------------------------------------------


def strip_templates(text: str) -> str:
    """Remove every `{{template}}` and `{{{parameter}}}`, nested ones included; inline templates keep their words.

    An opening that is never closed stays as text (as MediaWiki shows it) and scanning goes on after it.
    """
    parts, settled = [], 0
    for start, end in _template_spans(text):
        parts += (text[settled:start], _render_template(text[start:end]))
        settled = end
    parts.append(text[settled:])
    return "".join(parts)


def _template_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each outermost brace construct, matching runs of braces as MediaWiki's preprocessor does:
    a closing run closes the innermost opening, three braces at a time where both sides have three."""
    scan_from = 0
    while True:
        stack: list[list[int]] = []  # [start, braces still open] per opening run, innermost last
        for match in _BRACE_RUN.finditer(text, scan_from):
            run = len(match.group())
            if match.group()[0] == "{":
                stack.append([match.start(), run])
                continue
            while run >= 2 and stack:
                take = 3 if run >= 3 and stack[-1][1] >= 3 else 2
                stack[-1][1] -= take
                run -= take
                if stack[-1][1] < 2:
                    start = stack.pop()[0]
                    if not stack:
                        yield start, match.end() - run
        if not stack:
            return
        scan_from = stack[0][0] + stack[0][1]  # the outermost opening never closed: it is text


def _split_args(inner: str) -> list[str]:
    """A template's name and arguments: `inner` split at the pipes outside nested templates and links."""
    args, depth, start = [], 0, 0
    for token in _ARG_TOKEN.finditer(inner):
        mark = token.group()
        if mark in ("{{", "[["):
            depth += 1
        elif mark in ("}}", "]]"):
            depth = max(0, depth - 1)
        elif depth == 0:
            args.append(inner[start : token.start()])
            start = token.end()
    args.append(inner[start:])
    return args


def _render_template(span: str) -> str:
    """The visible words of one template occurrence: its inline rendering, or nothing."""
    if span.startswith("{{{"):
        return ""  # a template parameter: no value outside the template itself
    name = _TEMPLATE_NAME.match(span, 2).group()
    key = " ".join(name.replace("_", " ").split()).lower().removeprefix("template:")
    render = _INLINE_TEMPLATES.get(key) or (_first if key.startswith("lang-") else None)
    if render is None:
        return ""
    args = _split_args(span[2:-2])[1:]
    named = {k.strip().lower(): strip_templates(v).strip() for k, _, v in (a.partition("=") for a in args
                                                                           if _NAMED_ARG.match(a))}
    # An argument named by its number is that positional one: {{nowrap|1=E = mc2}}, written so for the "=".
    numbered = dict(enumerate((strip_templates(a).strip() for a in args if not _NAMED_ARG.match(a)), 1))
    numbered |= {int(k): v for k, v in named.items() if k.isdigit() and int(k) > 0}
    positional = [numbered.get(i, "") for i in range(1, max(numbered, default=0) + 1)]
    return render(positional, named)


def _first(pos: list[str], named: dict[str, str]) -> str:
    return pos[0] if pos else ""


def _convert(pos: list[str], named: dict[str, str]) -> str:
    """{{convert|5|to|10|km|mi}} -> '5 to 10 km': the value(s) and the first unit, as written."""
    words = pos[:1]
    rest = pos[1:]
    while len(rest) >= 2 and rest[0] in _CONVERT_RANGE_WORDS:
        words += rest[:2]
        rest = rest[2:]
    if rest:
        words.append(_CONVERT_UNITS.get(rest[0], rest[0]))
    return " ".join(words)


def _as_of(pos: list[str], named: dict[str, str]) -> str:
    year = pos[0] if pos else ""
    month = int(pos[1]) if len(pos) > 1 and pos[1].isdigit() and 1 <= int(pos[1]) <= 12 else 0
    return f"As of {_MONTHS[month - 1] + ' ' if month else ''}{year}"


def _date(pos: list[str], named: dict[str, str]) -> str:
    """{{birth date|1879|3|14|df=y}} -> '14 March 1879'; without df, 'March 14, 1879' (the template's default)."""
    if len(pos) < 3 or not all(p.isdigit() for p in pos[:3]) or not 1 <= int(pos[1]) <= 12:
        return _first(pos, named)
    year, month, day = pos[0], _MONTHS[int(pos[1]) - 1], int(pos[2])
    return f"{day} {month} {year}" if named.get("df", "").lower().startswith("y") else f"{month} {day}, {year}"


def _fraction(pos: list[str], named: dict[str, str]) -> str:
    if len(pos) >= 3:
        return f"{pos[0]} {pos[1]}/{pos[2]}"
    return f"{pos[0]}/{pos[1]}" if len(pos) == 2 else f"1/{pos[0]}" if pos else ""


def _words(fixed: str) -> Callable[[list[str], dict[str, str]], str]:
    return lambda pos, named: fixed


_CONVERT_RANGE_WORDS = frozenset({"to", "-", "–", "and", "or", "by", "x", "×", "+/-", "±", "and(-)", "to(-)"})
# Unit codes shown as the template shows them; a code not listed is kept as written (most are: km, mi, ft).
_CONVERT_UNITS = {"C": "°C", "F": "°F", "K": "K", "C-change": "°C", "F-change": "°F", "km2": "km²", "m2": "m²",
                  "sqmi": "sq mi", "sqft": "sq ft", "ha": "ha", "km/h": "km/h", "mph": "mph", "m3": "m³",
                  "cuft": "cu ft", "ft3": "cu ft", "e6acre": "million acres", "e6carat": "million carats",
                  "USgal": "US gal", "MUSgal": "million US gal", "Tcuft": "trillion cu ft", "PD/sqmi": "/sq mi",
                  "oilbbl": "barrels", "oilbbl/d": "barrels per day", "koilbbl/d": "thousand barrels per day",
                  "Moilbbl": "million barrels", "Moilbbl/d": "million barrels per day",
                  "Goilbbl": "billion barrels"}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_INLINE_TEMPLATES: dict[str, Callable[[list[str], dict[str, str]], str]] = {
    **dict.fromkeys(["nowrap", "nobr", "small", "smaller", "big", "larger", "nts", "val", "math", "mvar",
                     "keypress", "nihongo", "sic", "em", "strong", "vanchor", "chem name"], _first),
    "lang": lambda pos, named: pos[1] if len(pos) > 1 else "",
    "chem": lambda pos, named: "".join(pos),
    "transl": lambda pos, named: pos[-1] if pos else "",
    "quote": lambda pos, named: named.get("text") or named.get("quote") or _first(pos, named),
    "angbr": lambda pos, named: f"⟨{_first(pos, named)}⟩",
    "circa": lambda pos, named: f"c. {_first(pos, named)}".strip(),
    "c.": lambda pos, named: f"c. {_first(pos, named)}".strip(),
    **dict.fromkeys(["birth date", "death date", "birth date and age", "death date and age", "start date",
                     "end date", "start date and age", "start-date", "end-date"], _date),
    "oldstyledate": lambda pos, named: ", ".join(pos[:2]),
    "convert": _convert, "cvt": _convert, "as of": _as_of, "frac": _fraction,
    "'s": _words("'s"), "'": _words("'"), "nbsp": _words("\xa0"), "·": _words(" · "), "dot": _words(" · "),
    "ndash": _words("–"), "mdash": _words("—"), "snd": _words(" – "), "spaced ndash": _words(" – "),
    "!": _words("|"), "pipe": _words("|"),
}


# --- tables and links ----------------------------------------------------------------------------------


def _drop_nested(text: str, edges: re.Pattern) -> str:
    """Remove each outermost span between an opening and a closing edge (group `open` marks an opening).

    Nested pairs balance; an opening never closed runs to the end (the rest renders inside it); a closing
    edge with nothing open is dropped alone.
    """
    parts, settled, depth, start = [], 0, 0, 0
    for edge in edges.finditer(text):
        if edge.group("open"):
            if depth == 0:
                start = edge.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                parts.append(text[settled:start])
                settled = edge.end()
        else:
            parts.append(text[settled : edge.start()])
            settled = edge.end()
    parts.append(text[settled:start] if depth else text[settled:])
    return "".join(parts)


def _resolve_links(text: str, hidden_namespaces: frozenset[str]) -> str:
    """Replace wikilinks innermost first (a stack of `[[`), so a file caption's own links, or a single bracket
    in it, never end the file link early; an unclosed `[[` stays as text."""

    def link_text(inner: str) -> str:
        target, pipe, label = inner.partition("|")
        visible = target.lstrip().startswith(":")  # [[:Category:X]] links to the category page
        target = target.strip().lstrip(":").strip()
        namespace, colon, page = target.partition(":")
        if colon and not visible and namespace.strip().lower() in hidden_namespaces:
            return ""
        if not pipe:
            return target
        if label.strip():
            return label
        return re.sub(r"\s*\([^()]*\)$", "", page if colon else target)  # the pipe trick: [[Paris (band)|]]

    open_links: list[list[str]] = [[]]  # the text of each open link, outermost (the page itself) first
    settled = 0
    for edge in _LINK_EDGE.finditer(text):
        open_links[-1].append(text[settled : edge.start()])
        settled = edge.end()
        if edge.group() == "[[":
            open_links.append([])
        elif len(open_links) > 1:
            inner = "".join(open_links.pop())
            open_links[-1].append(link_text(inner))
        else:
            open_links[-1].append("]]")
    open_links[-1].append(text[settled:])
    while len(open_links) > 1:
        inner = "".join(open_links.pop())
        open_links[-1].append("[[" + inner)
    return "".join(open_links[0])


# --- lines ---------------------------------------------------------------------------------------------


def _tidy(text: str) -> str:
    """Lines: list markers made readable, spaces collapsed, empty items and empty sections dropped."""
    lines: list[str] = []
    numbers: dict[int, int] = {}  # the last number given at each depth of the current numbered list
    text = _OPENING_PUNCTUATION.sub("(", _EMPTY_PARENS.sub("", text))
    text = _SPACE_BEFORE_PUNCTUATION.sub("", _SPACES.sub(" ", text))
    for line in text.split("\n"):
        line = line.strip()
        item = _LIST_ITEM.match(line)
        if item is None:
            numbers.clear()
            if not _RULE_LINE.match(line):
                lines.append(line)
            continue
        markers, body = item.groups()
        body = body.lstrip(",.;: ")  # what followed a removed template, e.g. "* {{cite book}}, 2nd edition"
        if not any(c.isalnum() for c in body):
            continue
        depth = len(markers)
        for deeper in [d for d in numbers if d > depth]:
            del numbers[deeper]
        if markers[-1] == "*":
            body = f"{'  ' * (depth - 1)}- {body}"
        elif markers[-1] == "#":
            numbers[depth] = numbers.get(depth, 0) + 1
            body = f"{'  ' * (depth - 1)}{numbers[depth]}. {body}"
        lines.append(body)
    return _BLANK_LINES.sub("\n\n", "\n".join(_without_empty_sections(lines))).strip()


def _without_empty_sections(lines: list[str]) -> list[str]:
    """Drop headings with nothing kept under them before the next heading of the same or a higher level."""
    kept: list[str] = []
    # Scanning backwards: has a kept line been seen since the last heading of this level or higher?
    content_since = [False] * 7  # index = heading level 1..6
    for line in reversed(lines):
        if not line.startswith(_HEADING_MARK):
            if line:
                content_since = [True] * 7
            kept.append(line)
            continue
        level, title = int(line[1]), line[2:].strip()
        keep = bool(title) and content_since[level]
        if keep:
            kept.append(title)
        # This heading ends the sections of its level and deeper ones above it; it is content for higher ones.
        content_since = [keep or seen if lvl < level else False for lvl, seen in enumerate(content_since)]
    return kept[::-1]
