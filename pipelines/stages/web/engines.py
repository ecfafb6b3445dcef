"""The extract stage's second engine: resiliparse's HTML-to-text extractor (`engine: resiliparse`).

About 8-11x trafilatura's speed per page (its fast and balanced modes) at a lower snippet F1 on trafilatura-eval
(0.86 against 0.92-0.93: it keeps more boilerplate, see docs/performance.md); DCLM's choice for its pool. A C++
parser (Lexbor) and extractor: a page is one call, so the stage's timeout is checked only when that call returns.
"""

from __future__ import annotations

from collections.abc import Callable

INSTALL_HINT = "engine: resiliparse needs the resiliparse package: pip install 'refinery[resiliparse]'"


def resiliparse_extractor(include_comments: bool) -> Callable[[str], tuple[str | None, str | None]]:
    """`extract(html) -> (main text, title)` with resiliparse: main-content heuristics on, image alt texts,
    link targets, form fields and <noscript> left out; comment sections only with include_comments."""
    try:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err

    def extract(html: str) -> tuple[str | None, str | None]:
        tree = HTMLTree.parse(html)  # parsed once for the text and the title
        text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False, form_fields=False,
                                  noscript=False, comments=include_comments)
        title = " ".join((tree.title or "").split())
        return text or None, title or None

    return extract
