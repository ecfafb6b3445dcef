"""Instruction formats normalised into one Conversation shape: a list of {role, content} messages.

Roles are `system`, `user`, `assistant`, and for tool use `tool_call` (a function call the assistant writes,
its content the call as JSON `{"name": ..., "arguments": ...}`) and `tool` (what the function returned).
Each normaliser takes one parsed record and returns its conversations, or raises NotAConversation with a
quarantine reason. Contents are kept verbatim (no trimming: leading spaces can be code indentation).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

# Roles the model writes: they are what a loss mask trains on.
ASSISTANT_ROLES = ("assistant", "tool_call")

_SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
    "function_call": "tool_call", "observation": "tool", "function": "tool", "tool": "tool",
}
_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                 "tool": "tool", "function": "tool"}
_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
_TRANSCRIPT_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool_call": "Tool call",
                      "tool": "Tool"}


class NotAConversation(ValueError):
    """A record that cannot be normalised; the message is its quarantine reason (`kind: detail`)."""


@dataclass
class Conversation:
    messages: list[dict[str, str]]
    extras: dict[str, Any] = field(default_factory=dict)  # the record's other fields, for `meta`
    own_id: str | None = None  # the record's own id (or OASST tree id), if it has one
    part: str | None = None  # tells apart several conversations of one record (an OASST path's last message)


def message(role: str, content: Any) -> dict[str, str]:
    if not isinstance(content, str):
        raise NotAConversation(f"content_not_string: a {role} message's content is {type(content).__name__}")
    return {"role": role, "content": content}


def _field(record: dict, name: str, required: bool = True) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise NotAConversation(f"missing_field: no '{name}'")
        return None
    if not isinstance(value, str):
        raise NotAConversation(f"field_not_string: '{name}' is {type(value).__name__}")
    return value


def _extras(record: dict, used: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in used}


def _own_id(record: dict, id_field: str) -> str | None:
    value = record.get(id_field)
    return None if value is None else str(value)


def _prompt(instruction: str, context: str | None) -> str:
    """An instruction and its optional input as one user turn: the input follows after a blank line."""
    return f"{instruction}\n\n{context}" if context else instruction


def from_alpaca(record: dict, id_field: str = "id") -> list[Conversation]:
    """`instruction`, `input`, `output`; optional `system` and `history` ([[question, answer], ...])."""
    messages = []
    system = _field(record, "system", required=False)
    if system:
        messages.append(message("system", system))
    history = record.get("history") or []
    if not isinstance(history, list) or not all(isinstance(t, list) and len(t) == 2 for t in history):
        raise NotAConversation("bad_history: 'history' is not a list of [question, answer] pairs")
    for question, answer in history:
        messages += [message("user", question), message("assistant", answer)]
    user = _prompt(_field(record, "instruction"), _field(record, "input", required=False))
    messages += [message("user", user), message("assistant", _field(record, "output"))]
    extras = _extras(record, ("instruction", "input", "output", "system", "history", id_field))
    return [Conversation(messages, extras, _own_id(record, id_field))]


def from_dolly(record: dict, id_field: str = "id") -> list[Conversation]:
    """Databricks Dolly: `instruction`, `context`, `response`, `category` (kept in meta)."""
    user = _prompt(_field(record, "instruction"), _field(record, "context", required=False))
    messages = [message("user", user), message("assistant", _field(record, "response"))]
    extras = _extras(record, ("instruction", "context", "response", id_field))
    return [Conversation(messages, extras, _own_id(record, id_field))]


def from_qa(record: dict, id_field: str = "id") -> list[Conversation]:
    """A question and its answer: `question` with `answer` or `std_answer` (BELLE's evaluation set)."""
    answer_field = "answer" if "answer" in record else "std_answer"
    messages = [message("user", _field(record, "question")), message("assistant", _field(record, answer_field))]
    extras = _extras(record, ("question", answer_field, id_field))
    return [Conversation(messages, extras, _own_id(record, id_field))]


def from_self_instruct(record: dict, id_field: str = "id") -> list[Conversation]:
    """Self-Instruct seed tasks: one `instruction` and its `instances` ({input, output}), one conversation each."""
    instruction = _field(record, "instruction")
    instances = record.get("instances")
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise NotAConversation("missing_field: no 'instances' list")
    extras = _extras(record, ("instruction", "instances", id_field))
    own_id = _own_id(record, id_field)
    conversations = []
    for index, instance in enumerate(instances):
        user = _prompt(instruction, _field(instance, "input", required=False))
        messages = [message("user", user), message("assistant", _field(instance, "output"))]
        conversations.append(Conversation(messages, extras, own_id, str(index) if len(instances) > 1 else None))
    return conversations


def from_sharegpt(record: dict, id_field: str = "id") -> list[Conversation]:
    """`conversations: [{from, value}]` (or {role, content}); an optional top-level `system`; `tools` kept in meta."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise NotAConversation("missing_field: no 'conversations' list")
    messages = []
    system = _field(record, "system", required=False)
    if system:
        messages.append(message("system", system))
    for turn in turns:
        if not isinstance(turn, dict):
            raise NotAConversation(f"bad_turn: a turn is {type(turn).__name__}, not an object")
        speaker = turn.get("from", turn.get("role"))
        role = _SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            raise NotAConversation(f"unknown_role: '{speaker}'")
        messages.append(message(role, turn.get("value", turn.get("content"))))
    extras = _extras(record, ("conversations", "system", id_field))
    return [Conversation(messages, extras, _own_id(record, id_field))]


def _tool_call(name: Any, arguments: Any) -> dict[str, str]:
    """A function call as JSON, its arguments parsed when they are a JSON string (OpenAI sends them so)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # not JSON: kept as the string the model wrote
    return {"role": "tool_call", "content": json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)}


def _openai_content(content: Any, role: str) -> str:
    """A message's content: a string, or a list of parts of which only text parts are supported."""
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise NotAConversation(f"unsupported_content: a {role} message has a '{kind}' part")
            texts.append(part.get("text"))
        content = "".join(t for t in texts if isinstance(t, str))
    return message(role, content)["content"]


def from_openai(record: dict, id_field: str = "id") -> list[Conversation]:
    """OpenAI chat `messages` ({role, content, tool_calls}); an assistant's tool calls become `tool_call` messages."""
    raw = record.get("messages")
    if not isinstance(raw, list):
        raise NotAConversation("missing_field: no 'messages' list")
    messages = []
    for item in raw:
        if not isinstance(item, dict):
            raise NotAConversation(f"bad_turn: a message is {type(item).__name__}, not an object")
        role = _OPENAI_ROLES.get(str(item.get("role")))
        if role is None:
            raise NotAConversation(f"unknown_role: '{item.get('role')}'")
        content = _openai_content(item.get("content"), role)
        calls = item.get("tool_calls") or ([{"function": item["function_call"]}] if item.get("function_call") else [])
        if content or not calls:
            messages.append({"role": role, "content": content})
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if role != "assistant" or not isinstance(function, dict):
                raise NotAConversation(f"bad_tool_call: a {role} message has a tool call without a function")
            messages.append(_tool_call(function.get("name"), function.get("arguments")))
    extras = _extras(record, ("messages", id_field))
    return [Conversation(messages, extras, _own_id(record, id_field))]


def _usable_replies(node: dict) -> list[dict]:
    """Replies that count: deleted messages and those that failed review are left out, with their subtrees."""
    replies = node.get("replies") or []
    return [r for r in replies if isinstance(r, dict) and not r.get("deleted") and r.get("review_result") is not False]


def _threads(node: dict, path: list[dict]) -> Iterator[list[dict]]:
    """Every path from the root that ends at an answer with no answer below it."""
    path = path + [node]
    found = False
    for reply in _usable_replies(node):
        for thread in _threads(reply, path):
            found = True
            yield thread
    if not found and node.get("role") == "assistant":
        yield path


def _best_path(root: dict) -> list[dict]:
    """Follow the best-ranked reply (lowest `rank`; unranked last, then file order) down to a leaf."""
    path, node = [root], root
    def order(numbered: tuple[int, dict]) -> tuple[bool, float, int]:
        rank = numbered[1].get("rank")
        ranked = isinstance(rank, (int, float))
        return (not ranked, rank if ranked else 0, numbered[0])

    while replies := _usable_replies(node):
        node = min(enumerate(replies), key=order)[1]
        path.append(node)
    while len(path) > 1 and path[-1].get("role") != "assistant":
        path.pop()  # a thread ends at its last answer
    return path


def _oasst_messages(path: list[dict]) -> list[dict[str, str]]:
    messages = []
    for node in path:
        role = _OASST_ROLES.get(node.get("role"))
        if role is None:
            raise NotAConversation(f"unknown_role: '{node.get('role')}'")
        messages.append(message(role, node.get("text")))
    return messages


def from_oasst(record: dict, id_field: str = "id", best_only: bool = False) -> list[Conversation]:
    """An OpenAssistant message tree (`{message_tree_id, prompt}` or a root message with nested `replies`).

    One conversation per thread: every root-to-leaf path, ending at its last answer (a path whose leaf is an
    unanswered user message ends at the answer before it, and paths that then coincide are one). With
    `best_only`, the single path of best-ranked replies. A prompt without any answer is one conversation
    of one user message, so that a filter can remove it with a reason.
    """
    root = record.get("prompt", record)
    if not isinstance(root, dict) or "role" not in root:
        raise NotAConversation("missing_field: no 'prompt' message")
    tree_id = str(record.get("message_tree_id") or root.get("message_id") or "") or None
    paths = [_best_path(root)] if best_only else list(_threads(root, [])) or [[root]]
    extras = {"lang": root.get("lang")} if root.get("lang") else {}
    conversations = []
    for path in paths:
        part = None if best_only or len(path) == 1 else str(path[-1].get("message_id"))
        ids = {"message_ids": [node.get("message_id") for node in path]}
        conversations.append(Conversation(_oasst_messages(path), {**extras, **ids}, tree_id, part))
    return conversations


def nest_messages(records: list[tuple[int, dict]]) -> tuple[list[tuple[int, dict]], list[tuple[int, dict, str]]]:
    """Flat OASST messages (one per line, linked by `parent_id`) as nested trees.

    Returns (position, root with nested `replies`) per tree, and (position, message, reason) for messages
    whose parent is not in the file.
    """
    by_id = {r.get("message_id"): dict(r, replies=[]) for _, r in records}
    roots, orphans = [], []
    for position, record in records:
        node = by_id[record.get("message_id")]
        parent_id = record.get("parent_id")
        if parent_id is None:
            roots.append((position, node))
        elif parent_id in by_id:
            by_id[parent_id]["replies"].append(node)
        else:
            orphans.append((position, record, f"orphan_message: parent '{parent_id}' is not in the file"))
    return roots, orphans


Normaliser = Callable[..., list[Conversation]]
NORMALISERS: dict[str, Normaliser] = {
    "alpaca": from_alpaca,
    "dolly": from_dolly,
    "sharegpt": from_sharegpt,
    "openai": from_openai,
    "oasst": from_oasst,
    "oasst_best": partial(from_oasst, best_only=True),
    "self_instruct": from_self_instruct,
    "qa": from_qa,
}


def detect_format(record: Any) -> str | None:
    """The instruction format a record is in, from its fields; None when none fits."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("messages"), list):
        return "openai"
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if "message_tree_id" in record or ("message_id" in record and "role" in record):
        return "oasst"
    if "instruction" in record and "instances" in record:
        return "self_instruct"
    if "instruction" in record and "response" in record:
        return "dolly"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "question" in record and ("answer" in record or "std_answer" in record):
        return "qa"
    return None


def is_flat_oasst_message(record: Any) -> bool:
    """A message of a flat OASST export (linked to its parent by id): its tree needs the whole file."""
    return isinstance(record, dict) and "message_id" in record and "parent_id" in record and "replies" not in record


def transcript(messages: Sequence[dict[str, str]]) -> str:
    """A plain readable rendering (`User: ...`), the `text` of a conversation until a chat template replaces it."""
    return "\n\n".join(f"{_TRANSCRIPT_LABELS[m['role']]}: {m['content']}" for m in messages)


def first_prompt(messages: Sequence[dict[str, str]]) -> str | None:
    """The first user turn's text (what prompt deduplication and language ID look at)."""
    return next((m["content"] for m in messages if m["role"] == "user"), None)


def count_turns(messages: Sequence[dict[str, str]]) -> int:
    """Turns are user messages: each opens an exchange."""
    return sum(1 for m in messages if m["role"] == "user")
