"""The instructions reader on the real sets in ../shared/data/instructions: every format into one conversation shape."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from refinery.corpora.conversations import first_prompt, transcript
from refinery.corpora.readers import InputError, document_schema, infer_format, plan_input, read_task

# Records per file, and the format detected. OASST trees give one conversation per thread (546 threads
# in 100 trees; the message file holds the same trees as nested root messages).
EXPECTED = {
    "alpaca_5000.json": (5000, "alpaca"),
    "alpaca_en_demo.json": (999, "alpaca"),
    "alpaca_zh_demo.json": (1000, "alpaca"),
    "belle_dev1k_zh.json": (1000, "alpaca"),
    "belle_eval_set_zh.json": (1000, "qa"),
    "code_alpaca_2k.json": (2017, "alpaca"),
    "glaive_toolcall_en_demo.json": (300, "sharegpt"),
    "glaive_toolcall_zh_demo.json": (300, "sharegpt"),
    "identity.json": (91, "alpaca"),
    "oasst_en_100_message.jsonl": (546, "oasst"),
    "oasst_en_100_tree.jsonl": (546, "oasst"),
    "self_instruct_seed_tasks.jsonl": (175, "self_instruct"),
    "sharegpt_dummy_conversation.json": (500, "sharegpt"),
}

# The first two records of databricks-dolly-15k (CC BY-SA 3.0), as NVIDIA's NeMo docs and the Hugging Face
# dataset viewer print them: there is no Dolly file among the shared samples.
DOLLY = [
    {"instruction": "When did Virgin Australia start operating?",
     "context": "Virgin Australia, the trading name of Virgin Australia Airlines Pty Ltd, is an Australian-based "
                "airline. It is the largest airline by fleet size to use the Virgin brand. It commenced services on "
                "31 August 2000 as Virgin Blue, with two aircraft on a single route.[3] It suddenly found itself as "
                "a major airline in Australia's domestic market after the collapse of Ansett Australia in September "
                "2001. The airline has since grown to directly serve 32 cities in Australia, from hubs in Brisbane, "
                "Melbourne and Sydney.[4]",
     "response": "Virgin Australia commenced services on 31 August 2000 as Virgin Blue, with two aircraft on a "
                 "single route.",
     "category": "closed_qa"},
    {"instruction": "Which is a species of fish? Tope or Rope", "context": "", "response": "Tope",
     "category": "classification"},
]


def read(path: Path, fmt: str | None = "instructions", task_size: int = 1 << 25) -> tuple[pa.Table, pa.Table, int]:
    """(conversations, quarantined, records) of one input."""
    tasks = plan_input(str(path), path.parent, task_size, fmt)
    batches = [batch for task in tasks for batch in read_task(task, batch_rows=700)]
    docs = pa.concat_tables([b.documents for b in batches])
    return docs, pa.concat_tables([b.quarantined for b in batches]), sum(b.records for b in batches)


def test_every_instruction_file_normalises_and_counts_reconcile(data_dir):
    folder = data_dir / "instructions"
    assert sorted(p.name for p in folder.iterdir()) == sorted(EXPECTED)
    for path in sorted(folder.iterdir()):
        docs, quarantined, records = read(path)
        expected, fmt = EXPECTED[path.name]
        assert (docs.num_rows, quarantined.num_rows, records) == (expected, 0, expected), path.name
        assert set(docs.column("format").to_pylist()) == {fmt}
        assert docs.schema.equals(document_schema(["instructions"]))
        assert len(set(docs.column("id").to_pylist())) == expected  # ids are unique within a file
        for row in docs.slice(0, 50).to_pylist():
            assert row["text"] == transcript(row["messages"]) and row["prompt"] == first_prompt(row["messages"])
            assert row["turns"] == sum(m["role"] == "user" for m in row["messages"]) >= 1


def test_a_known_alpaca_instruction(data_dir):
    assert infer_format(data_dir / "instructions/alpaca_en_demo.json") == "instructions"
    docs, _, _ = read(data_dir / "instructions/alpaca_en_demo.json", fmt=None)
    crepes = docs.to_pylist()[0]
    assert crepes["id"] == "alpaca_en_demo.json:0" and crepes["source"] == "alpaca_en_demo"
    assert [m["role"] for m in crepes["messages"]] == ["user", "assistant"]
    assert crepes["prompt"] == "Describe a process of making crepes."
    assert crepes["messages"][1]["content"].startswith("Making crepes is an easy and delicious process!")
    with_input = read(data_dir / "instructions/alpaca_5000.json")[0].to_pylist()[0]
    assert with_input["prompt"] == ("Are the two sentences below grammatically correct? Output yes or no.\n\n"
                                    "Sentence 1: I am going to the store.\nSentence 2: I goes to the store.")
    assert with_input["messages"][1]["content"] == "No"


def test_a_known_belle_question_and_byte_range_tasks(data_dir):
    path = data_dir / "instructions/belle_dev1k_zh.json"  # JSON Lines despite its name
    docs, _, _ = read(path)
    first, second = docs.to_pylist()[:2]
    assert first["prompt"] == ("题目：小明每天早上花费10分钟时间走到学校，"
                               "如果小明家距离学校2公里，那么他每分钟走多少米？")
    assert first["messages"][1]["content"].endswith("答案：小明每分钟走3.3米。")
    first_line = path.read_bytes().split(b"\n")[0]
    assert (first["id"], second["id"]) == ("belle_dev1k_zh.json:0", f"belle_dev1k_zh.json:{len(first_line) + 1}")
    assert len(plan_input(str(path), path.parent, 64 << 10, "instructions")) > 5
    split, _, records = read(path, task_size=64 << 10)
    assert records == 1000 and split.equals(docs)


def test_oasst_threads_best_paths_and_flat_exports(data_dir, tmp_path):
    trees = data_dir / "instructions/oasst_en_100_tree.jsonl"
    docs, _, _ = read(trees)
    # Tree fa868b5e has 7 root-to-leaf paths; two end on unanswered user messages under the same answer,
    # so they end at that answer and are one thread: 6 conversations, 5 of them of four turns.
    mirror = [r for r in docs.to_pylist() if r["id"].startswith("fa868b5e-c4b3-485d-b70c-b56a585c75a5/")]
    assert len(mirror) == 6
    assert sorted(len(r["messages"]) for r in mirror) == [2, 4, 4, 4, 4, 4]
    assert all(r["messages"][-1]["role"] == "assistant" for r in mirror)
    assert "fa868b5e-c4b3-485d-b70c-b56a585c75a5/029135a5-1c29-4c2b-b584-14d2a533f832" in {r["id"] for r in mirror}

    best, _, records = read(trees, fmt="oasst_best")
    assert records == best.num_rows == 100
    row = next(r for r in best.to_pylist() if r["id"] == "fa868b5e-c4b3-485d-b70c-b56a585c75a5")
    assert [m[:8] for m in json.loads(row["meta"])["message_ids"]] == ["fa868b5e", "30789063", "d39611a3", "b4fcd8e9"]

    nested, _, _ = read(data_dir / "instructions/oasst_en_100_message.jsonl")
    assert nested.column("messages").equals(docs.column("messages"))
    # A flat export (one message a line, linked by parent_id, as oasst1 ships) gives the same conversations.
    flat_lines = []

    def flatten(message: dict) -> None:
        flat_lines.append(json.dumps({k: v for k, v in message.items() if k != "replies"}))
        for reply in message.get("replies") or []:
            flatten(reply)

    for line in (data_dir / "instructions/oasst_en_100_message.jsonl").read_text().splitlines():
        flatten(json.loads(line))
    flat_lines.append(json.dumps({"message_id": "x", "parent_id": "missing", "role": "prompter", "text": "?"}))
    (tmp_path / "flat.jsonl").write_text("\n".join(flat_lines) + "\n")
    assert len(plan_input(str(tmp_path / "flat.jsonl"), tmp_path, 4096, "instructions")) == 1  # whole trees
    flat, quarantined, records = read(tmp_path / "flat.jsonl", task_size=4096)
    assert sorted(flat.column("id").to_pylist()) == sorted(docs.column("id").to_pylist())
    assert quarantined.column("reason").to_pylist() == ["orphan_message: parent 'missing' is not in the file"]
    assert records == 547


def test_sharegpt_multi_turn_and_tool_calls(data_dir):
    sharegpt = read(data_dir / "instructions/sharegpt_dummy_conversation.json")[0].to_pylist()[0]
    assert sharegpt["id"] == "identity_0" and sharegpt["turns"] == 2
    assert [(m["role"], m["content"]) for m in sharegpt["messages"]] == [
        ("user", "Who are you?"),
        ("assistant", "I am Vicuna, a language model trained by researchers from Large Model Systems Organization "
                      "(LMSYS)."),
        ("user", "Have a nice day!"), ("assistant", "You too!")]
    glaive = read(data_dir / "instructions/glaive_toolcall_en_demo.json")[0].to_pylist()[0]
    roles = [m["role"] for m in glaive["messages"]]
    assert roles[:6] == ["user", "assistant", "user", "tool_call", "tool", "assistant"]
    call = json.loads(glaive["messages"][3]["content"])
    assert call == {"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}
    assert json.loads(json.loads(glaive["meta"])["tools"])[0]["name"] == "search_recipes"


def test_openai_messages_with_tool_calls(data_dir, tmp_path):
    """The glaive conversations rewritten as OpenAI chat records normalise to the same messages."""
    records = json.loads((data_dir / "instructions/glaive_toolcall_en_demo.json").read_text())[:40]
    roles = {"human": "user", "gpt": "assistant", "observation": "tool"}
    lines = []
    for record in records:
        messages = []
        for turn in record["conversations"]:
            if turn["from"] == "function_call":
                call = json.loads(turn["value"])
                function = {"name": call["name"], "arguments": json.dumps(call["arguments"])}
                messages.append({"role": "assistant", "content": None,
                                 "tool_calls": [{"id": "call_0", "type": "function", "function": function}]})
            else:
                messages.append({"role": roles[turn["from"]], "content": turn["value"]})
        lines.append(json.dumps({"messages": messages, "tools": record["tools"]}))
    (tmp_path / "chat.jsonl").write_text("\n".join(lines) + "\n")
    openai, quarantined, _ = read(tmp_path / "chat.jsonl")
    sharegpt = read(data_dir / "instructions/glaive_toolcall_en_demo.json")[0].slice(0, 40)
    assert quarantined.num_rows == 0 and set(openai.column("format").to_pylist()) == {"openai"}

    def parsed(messages: list[dict]) -> list:
        return [(m["role"], json.loads(m["content"]) if m["role"] == "tool_call" else m["content"]) for m in messages]

    assert [parsed(m) for m in openai.column("messages").to_pylist()] == [
        parsed(m) for m in sharegpt.column("messages").to_pylist()]


def test_dolly_self_instruct_and_question_answer(data_dir, tmp_path):
    (tmp_path / "dolly.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DOLLY))
    dolly = read(tmp_path / "dolly.jsonl")[0].to_pylist()
    assert dolly[0]["format"] == "dolly" and json.loads(dolly[0]["meta"]) == {"category": "closed_qa"}
    assert dolly[0]["prompt"] == f"{DOLLY[0]['instruction']}\n\n{DOLLY[0]['context']}"
    assert dolly[1]["prompt"] == "Which is a species of fish? Tope or Rope"  # an empty context adds nothing
    seed = read(data_dir / "instructions/self_instruct_seed_tasks.jsonl")[0].to_pylist()[0]
    assert seed["id"] == "seed_task_0" and json.loads(seed["meta"])["name"] == "breakfast_suggestion"
    assert seed["messages"][1]["content"].startswith("Yes, you can have 1 oatmeal banana protein shake")
    qa = read(data_dir / "instructions/belle_eval_set_zh.json")[0].to_pylist()[0]
    assert qa["prompt"] == "请你写出一个可以生成五个不同随机数的 Python 程序。"
    assert json.loads(qa["meta"]) == {"class": "code"}


def test_a_file_in_no_known_format_is_refused_naming_it(data_dir):
    path = data_dir / "text/c4_demo.jsonl"
    with pytest.raises(InputError, match=r"cannot tell the instruction format of .*c4_demo.jsonl.*fields .*text"):
        plan_input(str(path), path.parent, 1 << 20, "instructions")


def test_bad_records_are_quarantined_with_their_reason(data_dir, tmp_path):
    records = json.loads((data_dir / "instructions/alpaca_en_demo.json").read_text())[:30]
    del records[3]["output"]
    records[4]["instruction"] = ["not", "a", "string"]
    (tmp_path / "damaged.json").write_text(json.dumps(records, ensure_ascii=False))
    docs, quarantined, count = read(tmp_path / "damaged.json")
    assert quarantined.column("reason").to_pylist() == ["missing_field: no 'output'",
                                                        "field_not_string: 'instruction' is list"]
    assert quarantined.column("position").to_pylist() == [3, 4] and (docs.num_rows, count) == (28, 30)
    # A JSON array cut in the middle keeps every element before the cut and quarantines the rest.
    whole = (data_dir / "instructions/alpaca_en_demo.json").read_bytes()
    (tmp_path / "cut.json").write_bytes(whole[: len(whole) // 2])
    docs, quarantined, count = read(tmp_path / "cut.json")
    assert docs.num_rows > 400 and quarantined.num_rows == 1 and count == docs.num_rows + 1
    # A file cut short is reported as such (issue #15 item 7), with the parser's detail.
    assert quarantined.column("reason")[0].as_py().startswith(
        "truncated_stream: the file ends before the JSON array's closing ']' (Unterminated string")
    # JSON nested too deeply for the parser, after real records, as in the JSONL reader.
    nested = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(json.dumps(records[:3])[:-1] + ", " + nested + "]")
    (tmp_path / "deep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:3]) + nested + "\n")
    for name in ("deep.json", "deep.jsonl"):
        docs, quarantined, count = read(tmp_path / name)
        assert (docs.num_rows, count) == (3, 4)
        assert quarantined.column("reason")[0].as_py().startswith("malformed_json: nested too deeply to parse")
    # Naming the wrong format quarantines every record rather than guessing.
    docs, quarantined, _ = read(data_dir / "instructions/identity.json", fmt="sharegpt")
    assert docs.num_rows == 0 and set(quarantined.column("reason").to_pylist()) == {
        "missing_field: no 'conversations' list"}
