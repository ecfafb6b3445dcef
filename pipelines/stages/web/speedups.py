"""Output-identical speed-ups of trafilatura (see docs/performance.md, "extract").

Where a page's time went (balanced mode, trafilatura 2.3.1): about a third in seven XPath selectors whose
predicates call EXSLT `re:test` once or twice per element. lxml runs each call through its generic extension
mechanism: the attribute argument becomes a "smart string", which builds a Python proxy of its element (and runs
lxml.html's element-class lookup, a Python method, for it) only to be thrown away. The same selection written as
a loop over the elements, with the same regular expressions on the same attribute values, is 2-4x faster.

Two things are swapped, and only where they are provably the same:

- `SELECTORS`: each replaces one trafilatura XPath by a `Selector` that returns the same elements in the same
  (document) order. A selector is installed only if the XPath source it replaces hashes to the value it was
  written for, so a trafilatura release that changes an expression keeps its own XPath. The regular
  expressions are read out of that very source, never copied by hand.
- the element-class lookup of trafilatura's HTML parser: lxml.html's maps a tag name to a class in a Python
  method called for every element proxy; the same mapping (`form` → FormElement, ..., HtmlElement otherwise;
  comments, PIs and entities to theirs) as lxml's C-level namespace lookup.

tests/test_extract_speedups.py checks, on real pages, that every selector returns what its XPath returns on the
trees trafilatura actually evaluates it on, and that the extracted text is byte-identical with and without.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lxml import etree
from lxml import html as lxml_html
from lxml.html import HtmlElement

REGEX_ARGUMENT = re.compile(r"re:test\([^,]+, '([^']*)'")


def source_hash(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def first_of(elem: HtmlElement, names: tuple[str, ...]) -> str:
    """XPath's string value of `@a|@b`: the value of whichever comes first in the element's source order."""
    for name, value in elem.items():
        if name in names:
            return value
    return ""


class Selector:
    """Callable like an lxml XPath on an element: the elements `test` accepts among `tags` descendants of it
    (all elements if `tags` is empty), in document order; `first_per_parent` keeps, as XPath's `child::*[p][1]`
    does, only the first accepted child of each parent."""

    def __init__(self, path: str, tags: tuple[str, ...], test: Callable[[HtmlElement], bool],
                 first_per_parent: bool = False):
        self.path, self.tags, self.test, self.first_per_parent = path, tags or (etree.Element,), test, first_per_parent

    def __call__(self, tree: HtmlElement) -> list[HtmlElement]:
        found = [elem for elem in tree.iterdescendants(*self.tags) if self.test(elem)]
        if not self.first_per_parent:
            return found
        parents: set[HtmlElement] = set()
        firsts = []
        for elem in found:  # document order: a parent's first accepted child comes before its others
            parent = elem.getparent()
            if parent not in parents:
                parents.add(parent)
                firsts.append(elem)
        return firsts

    def __repr__(self) -> str:  # as lxml's XPath: its source (trafilatura logs str(expr))
        return self.path


def raw_tree_prune_0(path: str) -> Selector:
    patterns = REGEX_ARGUMENT.findall(path)  # on @id, then @class: the same two, once for each
    either, named = re.compile(patterns[0]), re.compile(patterns[2])

    def test(elem: HtmlElement) -> bool:
        id_, class_ = elem.get("id", ""), elem.get("class", "")
        return bool((either.search(id_) or either.search(class_)) and (
            next(elem.iterdescendants("h1"), None) is None or named.search(id_) or named.search(class_)))

    return Selector(path, ("div", "section", "aside"), test)


def raw_tree_prune_1(path: str) -> Selector:
    return Selector(path, ("div", "section", "aside"), lambda elem: "elementor-share-buttons" in elem.get("class", ""))


def remove_comments_and_lists(path: str) -> Selector:
    id_any, class_any, id_list, class_list = (re.compile(p) for p in REGEX_ARGUMENT.findall(path))

    def test(elem: HtmlElement) -> bool:
        id_, class_ = elem.get("id", ""), elem.get("class", "")
        return bool((id_any.search(id_) or class_any.search(class_)) and (
            elem.tag not in ("ol", "ul") or id_list.search(id_) or class_list.search(class_)))

    return Selector(path, ("div", "list", "section", "details", "ol", "ul"), test)


def overall_discard_0(path: str) -> Selector:
    either, by_id, by_class = (re.compile(p) for p in REGEX_ARGUMENT.findall(path))

    def test(elem: HtmlElement) -> bool:
        return bool(elem.get("data-lp-replacement-content") is not None
                    or "nav" in elem.get("role", "").replace("N", "n")
                    or "MostPopularStories" in elem.get("data-component", "")
                    or either.search(first_of(elem, ("id", "class")))
                    or by_id.search(elem.get("id", ""))
                    or by_class.search(elem.get("class", "")))

    return Selector(path, ("div", "item", "list", "p", "section", "span"), test)


def overall_discard_1(path: str) -> Selector:
    id_or_style, by_id, by_class = (re.compile(p) for p in REGEX_ARGUMENT.findall(path))

    def test(elem: HtmlElement) -> bool:
        if not len(elem.attrib):  # every clause needs an attribute
            return False
        class_, style = elem.get("class"), elem.get("style", "")
        return bool(class_ == "comments-title"
                    or first_of(elem, ("id", "class")).startswith("reply-")
                    or id_or_style.search(first_of(elem, ("id", "style")))
                    or "display:none" in style or "display: none" in style
                    or by_id.search(elem.get("id", ""))
                    or by_class.search(class_ or "")
                    or elem.get("aria-hidden") == "true")

    return Selector(path, (), test)


def body_0(path: str) -> Selector:
    by_id, by_class = (re.compile(p) for p in REGEX_ARGUMENT.findall(path))

    def test(elem: HtmlElement) -> bool:
        class_, id_ = elem.get("class"), elem.get("id")
        return bool(class_ in ("post", "entry") or elem.get("itemprop") == "articleBody" or id_ == "articleContent"
                    or by_id.search(id_ or "") or by_class.search(class_ or ""))

    return Selector(path, ("article", "div", "main", "section"), test, first_per_parent=True)


BASIC_CLEAN_TAGS = frozenset(("aside", "fencedframe", "footer", "script", "style", "svg", "template"))


def basic_clean(path: str) -> Selector:
    by_class, by_id = (re.compile(p, re.IGNORECASE) for p in REGEX_ARGUMENT.findall(path))

    def test(elem: HtmlElement) -> bool:
        return bool(elem.tag in BASIC_CLEAN_TAGS
                    or (elem.tag == "div" and "footer" in first_of(elem, ("class", "id")))
                    or by_class.search(elem.get("class", "")) or by_id.search(elem.get("id", "")))

    return Selector(path, (), test)


# (module, attribute, index in that list or None for a lone XPath, source hash, builder), for trafilatura 2.3.1.
SELECTORS = [
    ("trafilatura.xpaths", "RAW_TREE_PRUNE_XPATH", 0, "01e7c660fd6406f2", raw_tree_prune_0),
    ("trafilatura.xpaths", "RAW_TREE_PRUNE_XPATH", 1, "3c7afe92279543d5", raw_tree_prune_1),
    ("trafilatura.xpaths", "REMOVE_COMMENTS_AND_LISTS_XPATH", 0, "9cc18d34e6e2d258", remove_comments_and_lists),
    ("trafilatura.xpaths", "OVERALL_DISCARD_XPATH", 0, "a837e58a1b1ea116", overall_discard_0),
    ("trafilatura.xpaths", "OVERALL_DISCARD_XPATH", 1, "c1d5b70b8cd03783", overall_discard_1),
    ("trafilatura.xpaths", "BODY_XPATH", 0, "caaa561ceca17064", body_0),
    ("trafilatura.baseline", "BASIC_CLEAN_XPATH", None, "db6c25acd08aef99", basic_clean),
]


def html_class_lookup() -> etree.ElementNamespaceClassLookup:
    """lxml.html's element classes (HtmlElementClassLookup) through lxml's C-level lookup."""
    fallback = etree.ElementDefaultClassLookup(
        element=lxml_html.HtmlElement, comment=lxml_html.HtmlComment, pi=lxml_html.HtmlProcessingInstruction,
        entity=lxml_html.HtmlEntity)
    lookup = etree.ElementNamespaceClassLookup(fallback)
    by_name = lookup.get_namespace(None)
    for name, cls in lxml_html.HtmlElementClassLookup._default_element_classes.items():
        by_name[name] = cls
    return lookup


# What install() replaced, to put back: (module, attribute, index) -> the XPath.
ORIGINALS: dict[tuple[str, str, int | None], etree.XPath] = {}
_LOOKUP_SET: list[bool] = [False]  # the parser's lookup is set once, not again under a page being parsed


def _put(module_name: str, attribute: str, index: int | None, value: object) -> None:
    module = importlib.import_module(module_name)
    if index is None:
        setattr(module, attribute, value)
    else:
        getattr(module, attribute)[index] = value


def install() -> list[str]:
    """Swap in every selector whose XPath source is the one it was written for, and the parser's lookup.
    Idempotent; returns what is swapped (or already was)."""
    swapped = []
    for module_name, attribute, index, expected, build in SELECTORS:
        current = getattr(importlib.import_module(module_name), attribute)
        original = current if index is None else current[index]
        name = attribute if index is None else f"{attribute}[{index}]"
        if isinstance(original, Selector):
            swapped.append(name)
        elif isinstance(original, etree.XPath) and source_hash(original.path) == expected:
            ORIGINALS[(module_name, attribute, index)] = original
            _put(module_name, attribute, index, build(original.path))
            swapped.append(name)
    utils = importlib.import_module("trafilatura.utils")
    if isinstance(utils.HTML_PARSER, lxml_html.HTMLParser):
        if not _LOOKUP_SET[0]:
            utils.HTML_PARSER.set_element_class_lookup(html_class_lookup())
            _LOOKUP_SET[0] = True
        swapped.append("HTML_PARSER lookup")
    return swapped


def uninstall() -> None:
    """Put trafilatura's own XPaths and lxml.html's lookup back (the benchmark's and tests' stock runs)."""
    for (module_name, attribute, index), original in ORIGINALS.items():
        _put(module_name, attribute, index, original)
    ORIGINALS.clear()
    utils = importlib.import_module("trafilatura.utils")
    if isinstance(utils.HTML_PARSER, lxml_html.HTMLParser):
        utils.HTML_PARSER.set_element_class_lookup(lxml_html.HtmlElementClassLookup())
        _LOOKUP_SET[0] = False


@contextmanager
def stock_trafilatura() -> Iterator[None]:
    """Within: trafilatura as released (uninstalled); on exit, the speed-ups again."""
    uninstall()
    try:
        yield
    finally:
        install()
