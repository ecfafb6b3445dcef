"""The extract stage's trafilatura speed-ups (pipelines/stages/web/speedups.py) change nothing but time: on real
pages of the trafilatura evaluation set, every swapped selector returns what its XPath returns on each tree
trafilatura evaluates it on, and the text of every mode is byte-identical with and without them.
(tests/benchmarks/bench_extract.py --identical checks every page of the bench WARC the same way.)"""

from __future__ import annotations

import gzip
import importlib
from collections import Counter

import pytest
from lxml import etree

from refinery.pipelines.stages.extract import Extract, ExtractConfig
from refinery.pipelines.stages.web import speedups

MODES = ["fast", "balanced", "precision", "recall"]


@pytest.fixture(scope="module")
def pages(data_dir) -> list[str]:
    """Every 20th page of trafilatura-eval/pages (47 real pages of all kinds), decoded as the stage gets them."""
    folder = data_dir / "extraction/trafilatura-eval/pages"
    paths = sorted(folder.glob("*.html.gz"))[::20]
    return [gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace") for path in paths]


def texts(pages: list[str], mode: str) -> list[tuple[str | None, str | None]]:
    stage = Extract(ExtractConfig(mode=mode))  # installs the speed-ups
    return [stage.extract_page(html) for html in pages]


class Both:
    """Evaluates the XPath and its stand-in on every call, counts disagreements, returns the stand-in's answer."""

    def __init__(self, xpath: etree.XPath, selector: speedups.Selector, name: str, seen: Counter, differ: Counter):
        self.xpath, self.selector, self.name, self.seen, self.differ = xpath, selector, name, seen, differ

    def __call__(self, tree):
        stock, ours = self.xpath(tree), self.selector(tree)
        self.seen[self.name] += 1
        self.differ[self.name] += stock != ours
        return ours


def test_every_selector_and_the_lookup_are_swapped_in():
    swapped = speedups.install()
    assert len(swapped) == len(speedups.SELECTORS) + 1, swapped
    assert "HTML_PARSER lookup" in swapped


@pytest.mark.parametrize("mode", MODES)
def test_text_is_byte_identical_with_and_without_the_speedups(pages, mode):
    stage = Extract(ExtractConfig(mode=mode))  # installs the speed-ups
    with speedups.stock_trafilatura():
        stock = [stage.extract_page(html) for html in pages]
    ours = [stage.extract_page(html) for html in pages]
    assert sum(text is not None for text, _ in ours) > 0.9 * len(pages)
    assert ours == stock


def test_each_selector_returns_what_its_xpath_returns_on_the_trees_trafilatura_gives_it(pages):
    speedups.install()
    seen, differ = Counter(), Counter()
    wrapped = []
    for key, xpath in list(speedups.ORIGINALS.items()):
        module_name, attribute, index = key
        current = getattr(importlib.import_module(module_name), attribute)
        selector = current if index is None else current[index]
        wrapped.append((key, selector))
        speedups._put(*key, Both(xpath, selector, f"{attribute}[{index}]", seen, differ))
    try:
        for mode in MODES:
            texts(pages, mode)
    finally:
        for key, selector in wrapped:
            speedups._put(*key, selector)
    assert len(seen) == len(speedups.SELECTORS) and min(seen.values()) >= len(pages)
    assert sum(differ.values()) == 0, differ


def test_an_xpath_whose_source_changed_keeps_trafilaturas_own():
    speedups.uninstall()
    bodies = importlib.import_module("trafilatura.xpaths").BODY_XPATH
    original = bodies[0]
    bodies[0] = changed = etree.XPath(original.path + " ", namespaces={"re": "http://exslt.org/regular-expressions"})
    try:
        swapped = speedups.install()
        assert "BODY_XPATH[0]" not in swapped and bodies[0] is changed
        assert "OVERALL_DISCARD_XPATH[0]" in swapped
    finally:
        speedups.uninstall()
        bodies[0] = original
    assert "BODY_XPATH[0]" in speedups.install()
