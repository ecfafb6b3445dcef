"""Conversation stages (map): filter conversations, fill placeholders, render a chat template with loss spans.

They work on the `messages` column that the `instructions` reader adds. Rows without messages (documents
of other inputs in the same recipe) pass through conversation_filter and fill_placeholders unchanged;
chat_template removes them, since it has nothing to render.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from refinery.corpora.conversations import ASSISTANT_ROLES
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
from refinery.tokenization.chat import LOSS_SPANS_TYPE
from refinery.tokenization.templates import BUILT_IN, TemplateError, get_template

_NEGATION_EN = (r"(?:do not|don't|don’t|cannot|can't|can’t|am not|'m not|’m not|am unable|'m unable|’m unable|"
                r"have no|lack)")
# Model boilerplate that disclaims or refuses ("As an AI language model, I cannot ..."), matched case-insensitively
# in any assistant turn. A bare identity ("I am an AI assistant named ...") is not a refusal and is not matched.
DEFAULT_REFUSAL_PATTERNS = [
    r"\bas an? (?:ai|artificial intelligence|language model)\b[^.!?\n]{0,40}?,? i " + _NEGATION_EN,
    r"\bi(?:'m|’m| am) (?:just |only )?an? (?:ai|artificial intelligence|language model)\b[^.!?\n]{0,40}?"
    + _NEGATION_EN,
    r"\bi(?:'m|’m| am) (?:sorry|afraid),? (?:but )?i (?:cannot|can't|can’t|am unable|'m unable|’m unable|"
    r"am not able|'m not able|’m not able)",
    r"\bi (?:cannot|can't|can’t) (?:assist|help) (?:you )?with (?:that|this)\b",
    r"作为(?:一个|一名)?(?:人工智能|ai)(?:语言模型|助手|模型)?[，,]?\s*我并?(?:无法|不能|没有|不具备|不会)",
    r"作为(?:一个|一名)?(?:人工智能|ai)?语言模型[，,]?\s*我并?(?:无法|不能|没有|不具备)",
    r"我是(?:一个|一名)?(?:人工智能|ai|语言模型)[^。！？\n]{0,20}?[，,]\s*(?:所以)?我?(?:无法|不能|没有)",
    r"抱歉[，,]?\s*(?:但是?[，,]?\s*)?我(?:目前)?(?:无法|不能)",
]
# Signs that an answer was cut off (e.g. at a generation limit), checked on the conversation's last answer.
_TRUNCATION_PATTERNS = [
    r"[,，、(（\[{:：]\s*$",  # stops on a comma, colon or open bracket: the sentence or list goes on
    # English prose whose last line has a finished sentence, then stops mid-sentence on a lowercase word
    # (lines of lists, headings, hashtags and comments are not prose)
    r"(?:^|\n)[ \t]*[^-*#/ \t\n][^\n]*[a-z]{2,}[.!?][\"”')]?[ \t]+[A-Z][^\n]*[ \t][a-z]+\s*$",
]


class _Messages:
    """A batch's messages flattened: one entry per message, with the row it belongs to."""

    def __init__(self, docs: pa.Table):
        if "messages" not in docs.column_names:
            raise ValueError("conversation stages need a `messages` column: read the inputs with "
                             "`format: instructions` (or a named instruction format)")
        lists = docs.column("messages").combine_chunks()
        self.rows = docs.num_rows
        self.present = pc.is_valid(lists).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(lists)
        self.parents = pc.list_parent_indices(lists).to_numpy()
        self.roles = pc.struct_field(flat, "role")
        self.contents = pc.struct_field(flat, "content")
        self.is_user = pc.equal(self.roles, "user").to_numpy(zero_copy_only=False)
        self.is_answer = pc.is_in(self.roles, pa.array(ASSISTANT_ROLES)).to_numpy(zero_copy_only=False)

    def any_row(self, per_message: np.ndarray) -> np.ndarray:
        """Per row: whether any of its messages is marked."""
        rows = np.zeros(self.rows, dtype=bool)
        rows[self.parents[per_message]] = True
        return rows

    def last_of(self, per_message: np.ndarray) -> np.ndarray:
        """Indices of each row's last marked message."""
        marked = np.flatnonzero(per_message)
        owners = self.parents[marked]
        return marked[np.r_[owners[1:] != owners[:-1], True]] if len(marked) else marked


class ConversationFilterConfig(StageConfig):
    truncation: bool = Field(True, description="remove conversations whose last answer looks cut off")
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS),
        description="RE2 regexes (case-insensitive) of refusal boilerplate in assistant turns; [] turns it off",
    )
    extra_refusal_patterns: list[str] = Field(default_factory=list, description="more patterns, after the defaults")
    min_prompt_chars: int | None = Field(None, ge=0, description="remove conversations with a shorter user turn")
    max_prompt_chars: int | None = Field(None, ge=0, description="remove conversations with a longer user turn")
    min_answer_chars: int | None = Field(None, ge=0, description="remove conversations with a shorter answer")
    max_answer_chars: int | None = Field(None, ge=0, description="remove conversations with a longer answer")

    @field_validator("refusal_patterns", "extra_refusal_patterns")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:  # compiled by pyarrow's RE2, the engine that will run it
                pc.match_substring_regex(pa.array([""]), pattern)
            except pa.ArrowInvalid as err:
                raise ValueError(f"not a valid (RE2) regular expression: {pattern!r}: {err}") from None
        return patterns


@register
class ConversationFilter(MapStage):
    """Remove conversations without a usable answer, with refusal boilerplate, or with turns out of bounds.

    Reasons, the first that applies: no_answer, empty_prompt, empty_answer, unanswered_turn (ends on a user
    or tool message), truncated_answer, refusal (the `refusal_pattern` column names the pattern),
    prompt_too_short, prompt_too_long, answer_too_short, answer_too_long.
    """

    name = "conversation_filter"
    does = "filter conversations"
    Config = ConversationFilterConfig
    config: ConversationFilterConfig

    def process(self, docs: pa.Table) -> StageResult:
        batch = _Messages(docs)
        cfg = self.config
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(batch.contents)), 0).to_numpy(zero_copy_only=False)
        chars = pc.utf8_length(batch.contents).to_numpy(zero_copy_only=False)
        last_message = batch.last_of(np.ones(len(batch.parents), dtype=bool))
        ends_unanswered = np.zeros(batch.rows, dtype=bool)
        ends_unanswered[batch.parents[last_message]] = ~batch.is_answer[last_message]
        matched = self._refusals(batch)
        checks = [
            (batch.present & ~batch.any_row(batch.is_answer), "no_answer"),
            (batch.any_row(batch.is_user & blank), "empty_prompt"),
            (batch.any_row(batch.is_answer & blank), "empty_answer"),
            (ends_unanswered, "unanswered_turn"),
            (self._truncated(batch), "truncated_answer"),
            (pc.is_valid(matched).to_numpy(zero_copy_only=False), "refusal"),
        ]
        for role_mask, bound, compare, reason in (
            (batch.is_user, cfg.min_prompt_chars, np.less, "prompt_too_short"),
            (batch.is_user, cfg.max_prompt_chars, np.greater, "prompt_too_long"),
            (batch.is_answer, cfg.min_answer_chars, np.less, "answer_too_short"),
            (batch.is_answer, cfg.max_answer_chars, np.greater, "answer_too_long"),
        ):
            if bound is not None:
                checks.append((batch.any_row(role_mask & compare(chars, bound)), reason))
        reasons = first_reason([(pa.array(mask), reason) for mask, reason in checks], docs.num_rows)
        refusal_detail = pc.if_else(pc.equal(reasons, "refusal"), matched, pa.scalar(None, pa.string()))
        return split_by_reason(docs, reasons, refusal_pattern=refusal_detail)

    def _truncated(self, batch: _Messages) -> np.ndarray:
        rows = np.zeros(batch.rows, dtype=bool)
        if not self.config.truncation:
            return rows
        last = batch.last_of(batch.is_answer)
        answers = batch.contents.take(pa.array(last, pa.int64()))
        cut = (pc.count_substring(answers, "```").to_numpy(zero_copy_only=False) % 2 == 1)  # an open code block
        for pattern in _TRUNCATION_PATTERNS:
            cut |= pc.match_substring_regex(answers, pattern).to_numpy(zero_copy_only=False)
        rows[batch.parents[last]] = cut
        return rows

    def _refusals(self, batch: _Messages) -> pa.Array:
        """Per row, the first refusal pattern (in configured order) that an assistant turn matches, else null."""
        matched = np.full(batch.rows, None, dtype=object)
        answers = np.flatnonzero(batch.is_answer)
        contents = batch.contents.take(pa.array(answers, pa.int64()))
        for pattern in self.config.refusal_patterns + self.config.extra_refusal_patterns:
            hits = pc.match_substring_regex(contents, pattern, ignore_case=True).to_numpy(zero_copy_only=False)
            rows = np.unique(batch.parents[answers[hits]])
            rows = rows[matched[rows] == None]  # noqa: E711 - elementwise comparison with None
            matched[rows] = pattern
        return pa.array(matched, pa.string())


class FillPlaceholdersConfig(StageConfig):
    values: dict[str, str] = Field(min_length=1, description="placeholder name → text, e.g. {name: Refinery}")
    sources: list[str] | None = Field(None, description="only conversations of these sources (default: all)")
    remove_unfilled: bool = Field(True, description="remove conversations left with a {{placeholder}} not in values")

    @field_validator("values")
    @classmethod
    def _names(cls, values: dict[str, str]) -> dict[str, str]:
        for name in values:
            if not re.fullmatch(r"\w+", name):
                raise ValueError(f"placeholder names are words (letters, digits, _): {name!r}")
        return values


@register
class FillPlaceholders(MapStage):
    """Replace `{{name}}` placeholders (spaces inside the braces allowed) in messages, `prompt` and `text`."""

    name = "fill_placeholders"
    does = "fill placeholders"
    Config = FillPlaceholdersConfig
    config: FillPlaceholdersConfig

    def process(self, docs: pa.Table) -> StageResult:
        if "loss_spans" in docs.column_names:
            raise ValueError("fill_placeholders changes text lengths: put it before chat_template in the recipe")
        batch = _Messages(docs)
        chosen = np.ones(docs.num_rows, dtype=bool)
        if self.config.sources is not None:
            in_sources = pc.is_in(docs.column("source"), pa.array(self.config.sources, pa.string()))
            chosen = in_sources.to_numpy(zero_copy_only=False)
        contents = pc.if_else(chosen[batch.parents], self._fill(batch.contents), batch.contents)
        lists = docs.column("messages").combine_chunks()
        offsets = pc.subtract(lists.offsets, lists.offsets[0])  # the flattened messages start at 0
        struct = pa.StructArray.from_arrays([batch.roles, contents], fields=list(lists.type.value_type))
        filled = {"messages": pa.ListArray.from_arrays(offsets, struct, mask=pc.invert(pc.is_valid(lists)))}
        for name in ("prompt", "text"):
            column = docs.column(name).combine_chunks()
            filled[name] = pc.if_else(pa.array(chosen), self._fill(column), column)
        for name, column in filled.items():
            index = docs.schema.get_field_index(name)
            docs = docs.set_column(index, docs.schema.field(index), column)
        reasons = pa.nulls(docs.num_rows, pa.string())
        if self.config.remove_unfilled:
            left = pc.match_substring_regex(docs.column("text"), r"\{\{\s*\w+\s*\}\}").to_numpy(zero_copy_only=False)
            reasons = pc.if_else(pa.array(chosen & left), pa.scalar("unfilled_placeholder"), reasons)
        return split_by_reason(docs, reasons)

    def _fill(self, values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        for name, value in self.config.values.items():
            # RE2 replacements read backslashes as group references: escape them.
            values = pc.replace_substring_regex(values, r"\{\{\s*" + name + r"\s*\}\}", value.replace("\\", "\\\\"))
        return values




class ChatTemplateConfig(StageConfig):
    template: str = Field("refinery", description=f"built-in ({', '.join(BUILT_IN)}) or the path of a "
                          "tokenizer_config.json (its Jinja chat_template) or a .jinja file")
    train_on: Literal["all_assistant", "last_assistant"] = Field(
        "all_assistant", description="which assistant turns count in the loss (system and user turns never do)")
    eos_token: str = Field("<|eos|>", description="alpaca template only: the tokenizer's end-of-text token that "
                           "ends every response (trained on, so the model learns to stop)")


@register
class ChatTemplate(MapStage):
    """Render `messages` with a chat template: `text` becomes the rendered conversation and `loss_spans` the
    character spans of the assistant turns (content and end-of-turn marker), from which `tokenize` writes
    loss masks. Conversations the template cannot render are removed as `unrenderable` (`template_error`
    says why); rows without messages as `not_a_conversation`."""

    name = "chat_template"
    does = "apply the chat template"
    Config = ChatTemplateConfig
    config: ChatTemplateConfig

    def __init__(self, config: ChatTemplateConfig, context: RunContext = DEFAULT_CONTEXT):
        super().__init__(config, context)
        source = config.template
        if source not in BUILT_IN:
            source = self.require_file(source, "template", f"or use a built-in template: {', '.join(BUILT_IN)}")
        self.template = get_template(source, config.eos_token)

    def process(self, docs: pa.Table) -> StageResult:
        _Messages(docs)  # a clear error when there is no messages column
        texts = docs.column("text").to_pylist()
        spans: list[list[dict[str, int]] | None] = []
        reasons: list[str | None] = []
        errors: list[str | None] = []
        for row, messages in enumerate(docs.column("messages").to_pylist()):
            rendered, error = None, None
            if messages is not None:
                try:
                    rendered = self.template.render(messages)
                except TemplateError as err:
                    error = str(err)
            if rendered is None:
                spans.append(None)
                reasons.append("not_a_conversation" if messages is None else "unrenderable")
            else:
                texts[row] = rendered.text
                chosen = rendered.spans[-1:] if self.config.train_on == "last_assistant" else rendered.spans
                spans.append([{"start": start, "end": end} for start, end in chosen])
                reasons.append(None)
            errors.append(error)
        index = docs.schema.get_field_index("text")
        rendered = docs.set_column(index, docs.schema.field(index), pa.array(texts, pa.string()))
        rendered = rendered.append_column("loss_spans", pa.array(spans, LOSS_SPANS_TYPE))
        return split_by_reason(rendered, pa.array(reasons, pa.string()),
                               template_error=pa.array(errors, pa.string()))
