"""Chat templates: a conversation's messages as one training text, and the character spans the loss counts.

Built in: `refinery` (tokenization/chat.py, the special tokens of Refinery's own tokenizers), `chatml`,
`llama3` and `alpaca`; or any tokenizer's Jinja `chat_template` (see JinjaTemplate). Every span covers
what the model writes, an assistant's content (or its tool call), together with the marker that ends its
turn (`<|im_end|>`, `<|eot_id|>`, the EOS), so the model learns to stop. Nothing else is in a span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from refinery.corpora.conversations import ASSISTANT_ROLES
from refinery.tokenization.chat import render_chat


class TemplateError(ValueError):
    """A conversation this template cannot render (a role it has no turn for, content it rewrites, ...)."""


class Rendered(NamedTuple):
    text: str
    spans: list[tuple[int, int]]  # one (start, end) per assistant or tool_call message, in order


class ChatTemplate(Protocol):
    def render(self, messages: Sequence[Mapping[str, str]]) -> Rendered: ...


@dataclass(frozen=True)
class Turn:
    """How one role's message is written: header + content (inside `wrap`) + end + after."""

    header: str
    end: str = ""  # closes the turn; trained with the content of the roles the model writes
    after: str = ""  # written after the end, never trained (ChatML's newline)
    wrap: str = "{content}"  # e.g. "<tool_call>\n{content}\n</tool_call>"


@dataclass(frozen=True)
class TurnTemplate:
    """A template that writes each message as its role's Turn, after an optional start of text."""

    name: str
    turns: Mapping[str, Turn]
    begin: str = ""
    default_system: str | None = None  # written as a system message when a conversation has none

    def render(self, messages: Sequence[Mapping[str, str]]) -> Rendered:
        if self.default_system is not None and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        parts, spans, length = [self.begin], [], len(self.begin)
        for message in messages:
            turn = self.turns.get(message["role"])
            if turn is None:
                raise TemplateError(f"the {self.name} template has no turn for role '{message['role']}'")
            before, after_content = turn.wrap.split("{content}")
            body = f"{before}{message['content']}{after_content}{turn.end}"
            start = length + len(turn.header)
            if message["role"] in ASSISTANT_ROLES:
                spans.append((start, start + len(body)))
            parts += [turn.header, body, turn.after]
            length = start + len(body) + len(turn.after)
        return Rendered("".join(parts), spans)


def _chatml_turn(role: str, **wrapping: str) -> Turn:
    return Turn(f"<|im_start|>{role}\n", "<|im_end|>", "\n", **wrapping)


def _llama3_turn(role: str) -> Turn:
    return Turn(f"<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>")


# ChatML as OpenAI and Qwen write it; tool calls and results in the Hermes/Qwen tags.
CHATML = TurnTemplate("chatml", {
    **{role: _chatml_turn(role) for role in ("system", "user", "assistant")},
    "tool_call": _chatml_turn("assistant", wrap="<tool_call>\n{content}\n</tool_call>"),
    "tool": _chatml_turn("user", wrap="<tool_response>\n{content}\n</tool_response>"),
})

# Llama 3 Instruct; Llama 3.1 writes a JSON tool call as the assistant's content and tool results as `ipython`.
LLAMA3 = TurnTemplate("llama3", {
    **{role: _llama3_turn(role) for role in ("system", "user", "assistant")},
    "tool_call": _llama3_turn("assistant"),
    "tool": _llama3_turn("ipython"),
}, begin="<|begin_of_text|>")

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")


def alpaca_template(eos_token: str) -> TurnTemplate:
    """Stanford Alpaca's prompt (`prompt_no_input` + output + EOS, as its train.py builds it); more turns repeat
    the instruction and response blocks, and a system message replaces the preamble."""
    return TurnTemplate("alpaca", {
        "system": Turn("", after="\n\n"),
        "user": Turn("### Instruction:\n", after="\n\n"),
        "assistant": Turn("### Response:", end=eos_token),
    }, default_system=ALPACA_PREAMBLE)


class RefineryTemplate:
    """The template of tokenization/chat.py (Refinery's tokenizers carry its special tokens)."""

    def render(self, messages: Sequence[Mapping[str, str]]) -> Rendered:
        try:
            text, spans = render_chat(messages)
        except ValueError as err:
            raise TemplateError(f"the refinery template: {err}") from None
        return Rendered(text, spans)


def _token_text(value: Any) -> str:
    """A special token from tokenizer_config.json: a string, or an AddedToken object with `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


@dataclass
class JinjaTemplate:
    """A tokenizer's Jinja `chat_template`, rendered as transformers' apply_chat_template does (sandboxed).

    Spans are found by rendering once with a unique marker in place of each message's content and once with
    the contents: the markers say where every content lands, and the two renders must agree, so a template
    that rewrites content (beyond trimming it) is refused for that conversation rather than mis-masked. A span
    also covers the tokenizer's EOS token when the template writes it right after the assistant's content.
    Tool calls are passed as assistant messages whose content is the call's JSON.
    """

    source: str
    special_tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(f"the chat template refused the conversation: {message}")

        def tojson(value: Any, indent: int | None = None, **_: Any) -> str:
            return json.dumps(value, ensure_ascii=False, indent=indent)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        # No `strftime_now`: templates that would write today's date (Llama 3.1) fall back to a fixed one,
        # which keeps the output deterministic.
        env.globals["raise_exception"] = raise_exception
        try:
            self._template = env.from_string(self.source)
        except TemplateSyntaxError as err:
            raise ValueError(f"the chat template is not valid Jinja (line {err.lineno}): {err.message}") from None

    def _render(self, messages: list[dict[str, str]]) -> str:
        from jinja2 import TemplateError as JinjaError

        try:
            return self._template.render(messages=messages, add_generation_prompt=False, tools=None,
                                         **self.special_tokens)
        except JinjaError as err:
            raise TemplateError(f"the chat template failed: {err}") from None

    def render(self, messages: Sequence[Mapping[str, str]]) -> Rendered:
        plain = [{"role": "assistant" if m["role"] == "tool_call" else m["role"], "content": m["content"]}
                 for m in messages]
        markers = [f"\ue000{i}\ue001" for i in range(len(plain))]
        skeleton = self._render([{**m, "content": marker} for m, marker in zip(plain, markers)])
        places = [skeleton.find(marker) for marker in markers]
        if any(p < 0 or skeleton.count(marker) != 1 for p, marker in zip(places, markers)):
            raise TemplateError("the chat template does not write every message's content exactly once")
        if places != sorted(places):
            raise TemplateError("the chat template reorders the messages")
        real = self._render(plain)
        for contents in ([m["content"] for m in plain], [m["content"].strip() for m in plain]):
            text, starts = _splice(skeleton, markers, places, contents)
            if text == real:
                break
        else:
            raise TemplateError("the chat template changes message content, so its assistant spans are unknown")
        eos = self.special_tokens.get("eos_token", "")
        spans = []
        for message, start, content in zip(messages, starts, contents):
            if message["role"] in ASSISTANT_ROLES:
                end = start + len(content)
                spans.append((start, end + len(eos) if eos and text.startswith(eos, end) else end))
        return Rendered(text, spans)


def _splice(skeleton: str, markers: list[str], places: list[int], contents: list[str]) -> tuple[str, list[int]]:
    """The skeleton with each marker replaced by its content, and where each content starts."""
    parts, starts, cursor, length = [], [], 0, 0
    for marker, place, content in zip(markers, places, contents):
        parts.append(skeleton[cursor:place])
        length += place - cursor
        starts.append(length)
        parts.append(content)
        length += len(content)
        cursor = place + len(marker)
    parts.append(skeleton[cursor:])
    return "".join(parts), starts


def load_jinja_template(path: Path) -> JinjaTemplate:
    """A tokenizer_config.json's `chat_template` (a string, or named templates of which `default` is used), or a
    chat_template.jinja file; special tokens (bos_token, eos_token, ...) come from the tokenizer_config.json."""
    config_path = path if path.suffix == ".json" else path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if path.suffix == ".json":
        source = config.get("chat_template")
        if isinstance(source, list):  # [{name, template}, ...]
            source = next((t.get("template") for t in source if t.get("name") == "default"), None)
        if not isinstance(source, str):
            raise ValueError(f"{path} has no `chat_template` string (or no template named 'default')")
    else:
        source = path.read_text(encoding="utf-8")
    tokens = {key: _token_text(value) for key, value in config.items() if key.endswith("_token")}
    return JinjaTemplate(source, {k: v for k, v in tokens.items() if v})


BUILT_IN = ("refinery", "chatml", "llama3", "alpaca")


def get_template(name_or_path: str | Path, eos_token: str = "<|eos|>") -> ChatTemplate:
    """A built-in template by name, or the Jinja template of a tokenizer_config.json / .jinja file;
    `eos_token` ends the alpaca template's responses."""
    if name_or_path == "refinery":
        return RefineryTemplate()
    if name_or_path == "chatml":
        return CHATML
    if name_or_path == "llama3":
        return LLAMA3
    if name_or_path == "alpaca":
        return alpaca_template(eos_token)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"'{name_or_path}' is neither a built-in template ({', '.join(BUILT_IN)}) nor a file "
                         f"(looked for {path})")
    return load_jinja_template(path)
