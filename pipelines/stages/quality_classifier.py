"""Model-based quality: a fastText classifier's score per document (map), and keeping the best fraction (global).

Two stages because the two decisions need different machinery: a threshold is decided per document in the
streaming pass, while "the best 30%" needs every score first, so it is a global stage behind a barrier:

    - quality_classifier: {model: quality.bin}        # adds quality_score (and may remove by `threshold`)
    - quality_top_fraction: {fraction: 0.3}           # keeps the 30% with the highest quality_score

`quality_top_fraction` ranks any numeric column, so it also works on other signals. Models come from
`refinery classifier train` (labels `hq`/`lq`) or elsewhere (DCLM's `hq`/`cc`: set `label`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refinery.corpora.atomic import read_json
from refinery.pipelines.stages import register, top_cut
from refinery.pipelines.stages.base import (
    DEFAULT_CONTEXT,
    GlobalStage,
    MapStage,
    RunContext,
    StageConfig,
    StageResult,
    split_by_reason,
)
from refinery.pipelines.stages.filters import first_reason
from refinery.pipelines.stages.langid import LABEL_PREFIX, load_model

SCORE_COLUMN = "quality_score"


def classifier_text(text: pa.ChunkedArray | pa.Array) -> list[str]:
    """What the classifier reads, in training and in scoring: lowercased, newlines turned into spaces (fastText
    reads one line a text and splits words on whitespace itself; collapsing whitespace runs with a regex cost
    as much as the prediction)."""
    return pc.replace_substring(pc.utf8_lower(pc.fill_null(text, "")), "\n", " ").to_pylist()


def positive_probabilities(model: Any, lines: list[str], label: str) -> list[float]:
    """fastText's probability of `label` for each (normalised, one-line) text, in one call."""
    if not lines:
        return []
    target = LABEL_PREFIX + label
    all_labels, all_probabilities = model.predict(lines, k=-1)
    # fastText's float arithmetic can give a probability a little over 1 (1.00001).
    return [min(float(probabilities[labels.index(target)]), 1.0)
            for labels, probabilities in zip(all_labels, all_probabilities)]


class QualityClassifierConfig(StageConfig):
    model: str = Field(description="fastText classifier file (.bin or .ftz), e.g. from `refinery classifier "
                       "train`; relative to the recipe's folder")
    label: str = Field("hq", min_length=1, description="the model's label for good documents (without "
                       "`__label__`): its probability is the quality_score")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="remove documents whose quality_score is "
                                    "lower (blank documents have none and are removed too); null: score only")
    column: str = Field("text", description="the string column scored; null is read as blank")


@register
class QualityClassifier(MapStage):
    """Score each document with a fastText classifier (`quality_score`, float32, null for blank text);
    optionally remove documents scoring below `threshold`."""

    name = "quality_classifier"
    does = "score quality"
    Config = QualityClassifierConfig
    config: QualityClassifierConfig

    def __init__(self, config: QualityClassifierConfig, context: RunContext = DEFAULT_CONTEXT):
        super().__init__(config, context)
        self.model_path = self.require_file(config.model, "model", "train one with `refinery classifier train "
                                            "--positive ... --negative ... --output MODEL.bin`")

    def _model(self) -> Any:
        # Loaded on first use in each worker (not when the recipe is checked: DCLM-size models take a GB).
        model = load_model(str(self.model_path))
        labels = [label.removeprefix(LABEL_PREFIX) for label in model.get_labels()]
        if self.config.label not in labels:
            raise ValueError(f"quality_classifier: the model {self.model_path} has no label "
                             f"'{self.config.label}'; set `label:` to one of {', '.join(labels)}")
        return model

    def scores(self, text: pa.ChunkedArray | pa.Array) -> pa.Array:
        lines = classifier_text(text)
        rows = [row for row, line in enumerate(lines) if line and not line.isspace()]
        values: list[float | None] = [None] * len(lines)
        if rows:
            found = positive_probabilities(self._model(), [lines[row] for row in rows], self.config.label)
            for row, value in zip(rows, found):
                values[row] = value
        return pa.array(values, pa.float32())

    def process(self, docs: pa.Table) -> StageResult:
        if self.config.column not in docs.column_names:
            raise ValueError(f"quality_classifier: no column '{self.config.column}' to score (columns: "
                             f"{', '.join(docs.column_names)})")
        score = self.scores(docs.column(self.config.column))
        scored = docs.append_column(SCORE_COLUMN, score)
        checks = []
        if self.config.threshold is not None:
            checks.append((pc.fill_null(pc.less(score, self.config.threshold), True), "low_quality_score"))
        return split_by_reason(scored, first_reason(checks, docs.num_rows))


class TopFractionConfig(StageConfig):
    fraction: float = Field(gt=0.0, le=1.0, description="the fraction of documents kept: the round(fraction × "
                            "documents) with the highest score, ties broken by input order")
    column: str = Field(SCORE_COLUMN, description="the numeric column ranked (added upstream, e.g. by "
                        "quality_classifier); null and NaN rank last")


SIGNATURE_SCHEMA = pa.schema([("ord", pa.int64()), ("score", pa.float64())])
CUT_FILE = "cut.json"


def _scores(docs: pa.Table, column: str, stage: str) -> pa.Array:
    """The ranked column as float64, NaN read as null (DuckDB would rank NaN above every number)."""
    if column not in docs.column_names:
        raise ValueError(f"{stage}: no column '{column}' to rank (columns: {', '.join(docs.column_names)}); "
                         f"put quality_classifier (or the stage that adds '{column}') before it")
    values = docs.column(column)
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise ValueError(f"{stage}: column '{column}' is {values.type}, not a number")
    values = pc.cast(values, pa.float64())
    return pc.if_else(pc.is_nan(values), pa.scalar(None, pa.float64()), values)


@register
class QualityTopFraction(GlobalStage):
    """Keep the best `fraction` of the whole corpus by a score column (default quality_score): exactly
    round(fraction × documents) documents, the same whatever the number of workers."""

    name = "quality_top_fraction"
    collect_does = "rank by quality"
    does = "keep the best"
    Config = TopFractionConfig
    config: TopFractionConfig

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        return pa.table([ordinals, _scores(docs, self.config.column, self.name)], schema=SIGNATURE_SCHEMA)

    # The cut (the last kept document in score-descending, nulls-last, ordinal order: everything up to it stays)
    # is found in two steps, a histogram of the scores in parallel parts, then one bin sorted (top_cut.py).
    def finish_steps(self) -> tuple[str, ...]:
        return ("histogram", "cut")

    def step_parts(self, step: str, collected_files: list[Path], workdir: Path) -> int:
        return top_cut.histogram_parts(collected_files) if step == "histogram" else 1

    def run_step(self, step: str, part: int, collected_files: list[Path], workdir: Path) -> None:
        if step == "histogram":
            top_cut.histogram(collected_files, workdir, part)
        else:
            top_cut.cut(collected_files, workdir, self.config.fraction, workdir / CUT_FILE)

    def finish(self, collected_files: list[Path], workdir: Path) -> None:
        self.finish_in_steps(collected_files, workdir)

    def load_decisions(self, workdir: Path, first_ordinal: int, last_ordinal: int) -> dict[str, Any]:
        return read_json(workdir / CUT_FILE)

    def apply(self, docs: pa.Table, ordinals: pa.Array, decisions: dict[str, Any]) -> StageResult:
        score = _scores(docs, self.config.column, self.name)
        if not decisions["keep"]:
            kept = pa.array([False] * docs.num_rows, pa.bool_())
        else:
            up_to_cut = pc.less_equal(ordinals, decisions["ord"])
            if decisions["score"] is None:  # the cut falls among the null scores: every number is kept
                kept = pc.if_else(pc.is_null(score), up_to_cut, True)
            else:
                better = pc.greater(score, decisions["score"])
                tied = pc.and_(pc.equal(score, decisions["score"]), up_to_cut)
                kept = pc.fill_null(pc.or_(better, tied), False)
        return split_by_reason(docs, first_reason([(pc.invert(kept), "below_top_fraction")], docs.num_rows))
