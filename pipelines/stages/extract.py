"""Main text and title of HTML pages with trafilatura, or resiliparse (`engine:`) (map stage `extract`).

Which rows are pages: those whose `content_type` is `text/html` or `application/xhtml+xml` (parameters such as
`; charset=` are ignored). Rows without a content type (JSONL or Parquet inputs have no such column) count as
pages when their text starts with `<`; every other row (e.g. `text/plain` from WET) passes through unchanged.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import (
    DEFAULT_CONTEXT,
    MapStage,
    RunContext,
    StageConfig,
    StageResult,
    split_by_reason,
)

if TYPE_CHECKING:
    from lxml.html import HtmlElement

# trafilatura is imported when an extract stage is built, not when the stage registry loads: recipes
# without `extract` (and `refinery sql`) do not pay for it.

HTML_CONTENT_TYPE = r"^\s*(text/html|application/xhtml\+xml)\s*(;|$)"
LOOKS_LIKE_HTML = r"^[\s\x{feff}]*<"
TITLE_FIELD = pa.field("title", pa.string())

T = TypeVar("T")


class ExtractConfig(StageConfig):
    fingerprinted_when_set = frozenset({"engine"})  # runs made before engines existed used trafilatura's

    engine: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura",
        description="trafilatura (its modes below), or resiliparse's extract_plain_text with main_content (DCLM's "
        "choice: 8-11x faster per page, snippet F1 0.86 against 0.92-0.93, more boilerplate kept; needs the "
        "resiliparse package; see docs/recipes.md)",
    )
    mode: Literal["precision", "recall", "balanced", "fast"] = Field(
        "fast",
        description="trafilatura's trade-off: precision (favor_precision: less text, less boilerplate), recall "
        "(favor_recall: more text), balanced (its default, with fallback extractors), fast (balanced without the "
        "fallback extractors: 1.4x its speed, snippet F1 0.920 against 0.926; see docs/performance.md)",
    )
    include_tables: bool = Field(True, description="keep the text of <table> elements")
    include_comments: bool = Field(False, description="append the page's reader comments to its text")
    timeout_seconds: float | None = Field(
        10.0,
        gt=0,
        description="per page: a page whose extraction takes longer is removed with reason extraction_timeout "
        "(a guard against pathological pages, far above the ~15 ms of a typical page); null: no limit",
    )

    @model_validator(mode="after")
    def _trafilatura_options_need_trafilatura(self) -> ExtractConfig:
        if self.engine != "trafilatura" and (given := sorted({"mode", "include_tables"} & self.model_fields_set)):
            raise ValueError(f"{' and '.join(given)}: trafilatura's options, not {self.engine}'s "
                             "(resiliparse always keeps table text)")
        return self


class ExtractionTimeout(BaseException):
    """Raised from SIGALRM. A BaseException, so that trafilatura's own `except Exception` cannot swallow it."""


def _raise_timeout(signum: int, frame: object) -> None:
    raise ExtractionTimeout


@contextmanager
def per_call_deadline(seconds: float | None) -> Iterator[Callable[[Callable[[str], T], str], T]]:
    """Yield `run(fn, arg)`, which raises ExtractionTimeout when `fn(arg)` outlasts `seconds`.

    A real-time alarm interrupts pure-Python work with no thread or process to spare, but signals only reach
    the main thread (where the engine's workers run their stages) and there is one alarm per process. Elsewhere,
    or while another alarm is set, calls run without a limit rather than fail or disturb that alarm.
    The previous SIGALRM handler is restored on exit.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )
    if not usable:
        yield lambda fn, arg: fn(arg)
        return

    def run(fn: Callable[[str], T], arg: str) -> T:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn(arg)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        yield run
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def page_title(tree: HtmlElement) -> str | None:
    """The title trafilatura's metadata would give (meta tags, JSON-LD, then <h1>/<title>), without the date
    search that `with_metadata` also runs (htmldate: ~30 ms a page, more than the extraction itself)."""
    from trafilatura.metadata import examine_meta, extract_meta_json, extract_title

    metadata = examine_meta(tree)
    # JSON-LD sets a title only where the meta tags gave none (trafilatura's `if not metadata.title`), and its
    # search costs ~0.8 ms a page (a regex over every script): skipped when it cannot change the title.
    if not metadata.title:
        try:
            metadata = extract_meta_json(tree, metadata)
        except Exception:  # trafilatura guards this call the same way: malformed JSON-LD is common
            pass
    if not metadata.title:
        metadata.title = extract_title(tree)
    metadata.clean_and_trim()
    return metadata.title or None


def html_rows(docs: pa.Table) -> list[bool]:
    """Per row: is it an HTML page to extract (see the module docstring)?"""
    looks_like_html = pc.fill_null(pc.match_substring_regex(docs.column("text"), LOOKS_LIKE_HTML), False)
    if "content_type" not in docs.column_names:
        return looks_like_html.to_pylist()
    content_type = docs.column("content_type")
    declared_html = pc.match_substring_regex(content_type, HTML_CONTENT_TYPE, ignore_case=True)
    return pc.if_else(pc.is_null(content_type), looks_like_html, declared_html).to_pylist()


@register
class Extract(MapStage):
    """Replace each HTML page's `text` with its main text and add its `title` (null when it has none).

    Removes pages with nothing to extract (`extraction_empty`), pages that raise (`extraction_failed`, the
    exception's type in `extraction_error`) and pages that outlast `timeout_seconds` (`extraction_timeout`);
    removed rows keep their HTML. trafilatura's cross-document deduplication stays off: it would make a page's
    output depend on the pages processed before it in the same worker.
    """

    name = "extract"
    does = "extract text"
    Config = ExtractConfig
    config: ExtractConfig

    def __init__(self, config: ExtractConfig, context: RunContext = DEFAULT_CONTEXT):
        super().__init__(config, context)
        if config.engine == "resiliparse":
            from refinery.pipelines.stages.web.engines import resiliparse_extractor

            self.extract_page = resiliparse_extractor(config.include_comments)  # type: ignore[method-assign]
            return
        from trafilatura.settings import Extractor

        from refinery.pipelines.stages.web.speedups import install

        install()  # faster stand-ins for trafilatura's hottest selectors, byte-identical output

        # One Extractor for every page: trafilatura copies it before any per-page change (its recall retry).
        self.options = Extractor(
            output_format="txt",
            fast=config.mode == "fast",
            precision=config.mode == "precision",
            recall=config.mode == "recall",
            comments=config.include_comments,
            tables=config.include_tables,
            dedup=False,
        )

    def extract_page(self, html: str) -> tuple[str | None, str | None]:
        """(main text, title) of one page with trafilatura; the HTML is parsed once for both."""
        from trafilatura import extract
        from trafilatura.utils import load_html

        tree = load_html(html)
        if tree is None:  # not parseable as HTML (trafilatura's own check): nothing to extract
            return None, None
        title = page_title(tree)  # read-only; trafilatura extracts from its own copy of the tree
        return extract(tree, options=self.options), title

    def process(self, docs: pa.Table) -> StageResult:
        texts = docs.column("text").to_pylist()
        has_title = "title" in docs.column_names
        titles = docs.column("title").cast(pa.string()).to_pylist() if has_title else [None] * docs.num_rows
        reasons: list[str | None] = [None] * docs.num_rows
        errors: list[str | None] = [None] * docs.num_rows
        with per_call_deadline(self.config.timeout_seconds) as run:
            for row, is_page in enumerate(html_rows(docs)):
                if not is_page:
                    continue
                try:
                    text, title = run(self.extract_page, texts[row])
                except ExtractionTimeout:
                    reasons[row] = "extraction_timeout"
                except Exception as err:  # a page that breaks the parser must not stop the run
                    reasons[row], errors[row] = "extraction_failed", type(err).__name__
                else:
                    if text is None or not text.strip():
                        reasons[row] = "extraction_empty"
                    else:
                        texts[row], titles[row] = text, title
        text_field = docs.schema.field("text")
        out = docs.set_column(docs.schema.get_field_index("text"), text_field, pa.array(texts, text_field.type))
        title_column = pa.array(titles, pa.string())
        if has_title:
            out = out.set_column(out.schema.get_field_index("title"), TITLE_FIELD, title_column)
        else:
            out = out.append_column(TITLE_FIELD, title_column)
        return split_by_reason(out, pa.array(reasons, pa.string()), extraction_error=pa.array(errors, pa.string()))
