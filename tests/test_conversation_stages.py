"""Conversation stages on real instruction sets, prompt dedup and langid, and the bundled instructions recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from refinery.corpora.readers import document_schema, plan_input, read_task
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import parse_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.engine.segments import conform
from refinery.pipelines.stages.conversations import (
    DEFAULT_REFUSAL_PATTERNS,
    ChatTemplate,
    ChatTemplateConfig,
    ConversationFilter,
    ConversationFilterConfig,
    FillPlaceholders,
    FillPlaceholdersConfig,
)
from refinery.pipelines.stages.langid import LangId, LangIdConfig
from refinery.tokenization.chat import END
from refinery.tokenization.reader import TokenShards
from refinery.tokenization.tokenizer import load_tokenizer

RECIPE = Path(__file__).resolve().parents[1] / "pipelines/recipes/instructions.yaml"
SCHEMA = document_schema(["instructions", "jsonl"])


def conversations(data_dir: Path, *names: str, fmt: str = "instructions") -> pa.Table:
    tables = []
    for name in names:
        path = data_dir / "instructions" / name
        for task in plan_input(str(path), path.parent, 1 << 25, fmt):
            tables += [conform(batch.documents, SCHEMA) for batch in read_task(task)]
    return pa.concat_tables(tables)


def by_id(table: pa.Table) -> dict[str, dict]:
    return {row["id"]: row for row in table.to_pylist()}


@pytest.fixture(scope="module")
def filtered(data_dir):
    docs = conversations(data_dir, "alpaca_en_demo.json", "alpaca_5000.json", "alpaca_zh_demo.json",
                         "glaive_toolcall_zh_demo.json", "identity.json")
    return docs, ConversationFilter(ConversationFilterConfig()).process(docs)


def test_filter_removes_refusals_cut_off_and_empty_answers(filtered):
    docs, (kept, removed, _) = filtered
    assert kept.num_rows + removed.num_rows == docs.num_rows and 0 < removed.num_rows < docs.num_rows // 20
    gone = by_id(removed)
    refusal = gone["alpaca_en_demo.json:43"]  # "As an AI, I don't have access to real-time financial data ..."
    assert (refusal["reason"], refusal["refusal_pattern"]) == ("refusal", DEFAULT_REFUSAL_PATTERNS[0])
    assert gone["alpaca_en_demo.json:124"]["reason"] == "truncated_answer"  # "... it may need to be re"
    assert gone["alpaca_5000.json:2335"]["reason"] == gone["alpaca_5000.json:4658"]["reason"] == "empty_answer"
    chinese = [r for r in gone.values() if r["source"] == "alpaca_zh_demo" and r["reason"] == "refusal"]
    assert any(r["messages"][-1]["content"].startswith("作为一个人工智能助手，我无法拥有") for r in chinese)
    tool_refusals = [r for r in gone.values() if r["source"] == "glaive_toolcall_zh_demo" and r["reason"] == "refusal"]
    assert any("很抱歉，我无法帮助您预订机票" in r["messages"][-1]["content"] for r in tool_refusals)
    cut = [r for r in gone.values() if r["source"] == "alpaca_zh_demo" and r["reason"] == "truncated_answer"]
    assert any(r["messages"][-1]["content"].endswith("萨克斯、小号、") for r in cut)
    # An assistant saying what it is, without refusing, stays (identity.json: "As an AI assistant developed by ...").
    assert removed.filter(pa.compute.equal(removed.column("source"), "identity")).num_rows == 0
    assert set(removed.column("refusal_pattern").drop_null().to_pylist()) <= set(DEFAULT_REFUSAL_PATTERNS)


def test_filter_bounds_unanswered_turns_and_options(filtered):
    docs, _ = filtered
    bounded = ConversationFilter(ConversationFilterConfig(min_prompt_chars=10, max_answer_chars=1500)).process(docs)
    for row in bounded.removed.to_pylist():
        answers = [len(m["content"]) for m in row["messages"] if m["role"] == "assistant"]
        prompts = [len(m["content"]) for m in row["messages"] if m["role"] == "user"]
        if row["reason"] == "answer_too_long":
            assert max(answers) > 1500
        elif row["reason"] == "prompt_too_short":
            assert min(prompts) < 10
    reasons = set(bounded.removed.column("reason").to_pylist())
    assert {"answer_too_long", "prompt_too_short", "refusal"} <= reasons
    # A real conversation whose last answer is missing ends on the user's turn.
    messages = docs.column("messages").to_pylist()[:5]
    cut = docs.slice(0, 5).set_column(docs.schema.get_field_index("messages"), "messages",
                                      pa.array([m[:-1] for m in messages], docs.schema.field("messages").type))
    assert set(ConversationFilter(ConversationFilterConfig()).process(cut).removed.column("reason").to_pylist()) == {
        "no_answer"}
    two_turns = docs.slice(0, 2)
    joined = [messages[0] + messages[1][:1]]
    unanswered = two_turns.slice(0, 1).set_column(docs.schema.get_field_index("messages"), "messages",
                                                   pa.array(joined, docs.schema.field("messages").type))
    assert ConversationFilter(ConversationFilterConfig()).process(unanswered).removed.column("reason").to_pylist() == [
        "unanswered_turn"]
    off = ConversationFilter(ConversationFilterConfig(refusal_patterns=[], truncation=False)).process(docs)
    assert not {"refusal", "truncated_answer"} & set(off.removed.column("reason").to_pylist())
    with pytest.raises(ValidationError, match="RE2"):
        ConversationFilterConfig(extra_refusal_patterns=["(unclosed"])
    empty = ConversationFilter(ConversationFilterConfig()).process(docs.slice(0, 0))
    assert empty.kept.schema.equals(docs.schema) and empty.removed.schema.equals(bounded.removed.schema)


def test_fill_placeholders_in_identity(data_dir):
    docs = conversations(data_dir, "identity.json", "code_alpaca_2k.json")
    values = {"name": "Refinery", "author": "the Refinery developers"}
    kept, removed, _ = FillPlaceholders(FillPlaceholdersConfig(values=values, sources=["identity"])).process(docs)
    assert removed.num_rows == 0 and not kept.column("text").equals(docs.column("text"))
    identity = [r for r in kept.to_pylist() if r["source"] == "identity"]
    assert not any("{{" in r["text"] or any("{{" in m["content"] for m in r["messages"]) for r in identity)
    first = identity[0]["messages"][1]["content"]
    assert first == ("Hello! I am Refinery, an AI assistant developed by the Refinery developers. "
                     "How can I assist you today?")
    assert kept.filter(pa.compute.equal(kept.column("source"), "code_alpaca_2k")).equals(
        docs.filter(pa.compute.equal(docs.column("source"), "code_alpaca_2k")))
    # Only `name` given: the answers that also name the author keep a placeholder and are removed.
    raw = json.loads((data_dir / "instructions/identity.json").read_text())
    name_only = FillPlaceholders(FillPlaceholdersConfig(values={"name": "Refinery"})).process(docs)
    assert name_only.removed.num_rows == sum("{{author}}" in r["output"] for r in raw) == 60
    assert set(name_only.removed.column("reason").to_pylist()) == {"unfilled_placeholder"}
    rendered = ChatTemplate(ChatTemplateConfig()).process(docs.slice(0, 3)).kept
    with pytest.raises(ValueError, match="before chat_template"):
        FillPlaceholders(FillPlaceholdersConfig(values=values)).process(rendered)


def test_chat_template_stage(data_dir):
    docs = conversations(data_dir, "sharegpt_dummy_conversation.json", "glaive_toolcall_en_demo.json")
    c4 = data_dir / "text/c4_demo.jsonl"
    plain = conform(next(read_task(plan_input(str(c4), c4.parent, 1 << 25)[0])).documents.slice(0, 3), SCHEMA)
    kept, removed, _ = ChatTemplate(ChatTemplateConfig(template="refinery")).process(pa.concat_tables([docs, plain]))
    with_tools = sum(any(m["role"] in ("tool_call", "tool") for m in c) for c in docs.column("messages").to_pylist())
    assert with_tools > 100 and kept.num_rows == docs.num_rows - with_tools  # the refinery template has no tool turns
    assert set(removed.column("reason").to_pylist()) == {"unrenderable", "not_a_conversation"}
    assert "tool_call" in removed.column("template_error")[0].as_py()
    first = kept.to_pylist()[0]
    assert first["text"].startswith("<|user|>Who are you?<|end|>\n<|assistant|>I am Vicuna")
    vicuna = "I am Vicuna, a language model trained by researchers from Large Model Systems Organization (LMSYS)."
    assert [first["text"][s["start"]:s["end"]] for s in first["loss_spans"]] == [vicuna + END, "You too!" + END]
    last = ChatTemplate(ChatTemplateConfig(template="chatml", train_on="last_assistant")).process(docs)
    assert last.removed.num_rows == 0 and {len(s) for s in last.kept.column("loss_spans").to_pylist()} == {1}
    empty = ChatTemplate(ChatTemplateConfig()).process(docs.slice(0, 0))
    assert empty.kept.schema.equals(kept.schema)
    with pytest.raises(ValueError, match="neither|not found"):
        ChatTemplate(ChatTemplateConfig(template="missing/tokenizer_config.json"))


def test_langid_labels_the_user_prompt(data_dir):
    docs = conversations(data_dir, "belle_dev1k_zh.json", "alpaca_en_demo.json")
    c4 = data_dir / "text/c4_demo.jsonl"
    plain = conform(next(read_task(plan_input(str(c4), c4.parent, 1 << 25)[0])).documents.slice(0, 2), SCHEMA)
    labelled = LangId(LangIdConfig(column="prompt")).process(pa.concat_tables([docs, plain])).kept
    langs = labelled.column("lang").to_pylist()
    assert langs[:1000].count("zh") > 900 and langs[1000:1999].count("en") > 950
    assert langs[-2:] == [None, None]  # documents have no prompt


@pytest.fixture(scope="module")
def duplicates_run(data_dir, tmp_path_factory) -> Path:
    folder = data_dir / "instructions"
    recipe = {"name": "dups", "inputs": [{"path": str(folder / n)} for n in
                                         ("alpaca_5000.json", "alpaca_en_demo.json", "code_alpaca_2k.json")],
              "stages": [{"exact_dedup": {"column": "prompt"}}], "output": str(tmp_path_factory.mktemp("d") / "out")}
    return run_recipe(parse_recipe(yaml.safe_dump(recipe)), workers=2, progress=False).run_dir


def test_duplicate_prompts_across_sets_are_found_in_sql(duplicates_run):
    pairs = {(r["removed_from"], r["kept_in"]): r["n"] for r in sql.query(duplicates_run, (
        "SELECT r.source AS removed_from, d.source AS kept_in, count(*) AS n FROM removed r "
        "JOIN docs d ON d.id = r.duplicate_of GROUP BY ALL")).to_pylist()}
    # 95 distinct prompts of alpaca_en_demo are already in alpaca_5000 (read first): 97 conversations, as two of
    # them are also repeated inside alpaca_en_demo, whose other repeats (12) point at their first copy there.
    # The code set shares one instruction with alpaca_5000 ("Convert the given Celsius temperature to
    # Fahrenheit."), with another input: not the same prompt.
    assert pairs == {("alpaca_en_demo", "alpaca_5000"): 97, ("alpaca_en_demo", "alpaca_en_demo"): 12}
    distinct = sql.query(duplicates_run, "SELECT count(DISTINCT lower(d.prompt)) AS n FROM removed r JOIN docs d "
                                         "ON d.id = r.duplicate_of WHERE d.source = 'alpaca_5000'")
    assert distinct.column("n")[0].as_py() == 95
    chatbot = sql.query(duplicates_run, "SELECT r.id, r.duplicate_of FROM removed r "
                                        "WHERE lower(r.prompt) = 'create an ai chatbot'").to_pylist()
    assert len(chatbot) == 1 and chatbot[0]["duplicate_of"].startswith("alpaca_5000.json:")


@pytest.fixture(scope="module")
def bundled_run(data_dir, tmp_path_factory) -> Path:
    """The bundled recipe's stages on its placeholder, English, multi-turn (OASST) and Chinese inputs."""
    recipe = yaml.safe_load(RECIPE.read_text())
    folder = data_dir / "instructions"
    keep = ("identity.json", "alpaca_en_demo.json", "oasst_en_100_tree.jsonl", "belle_dev1k_zh.json")
    recipe["inputs"] = [{**spec, "path": str(folder / Path(spec["path"]).name)} for spec in recipe["inputs"]
                        if Path(spec["path"]).name in keep]
    assert len(recipe["inputs"]) == len(keep)
    recipe["stages"][-1]["tokenize"].update(vocab_size=1000, validation_fraction=0.05)
    decontaminate = next(stage["decontaminate"] for stage in recipe["stages"] if "decontaminate" in stage)
    decontaminate["evals"] = [str(data_dir / "evals")]
    recipe["output"] = str(tmp_path_factory.mktemp("instructions") / "out")
    loaded = parse_recipe(yaml.safe_dump(recipe), "instructions.yaml", RECIPE.parent)
    return run_recipe(loaded, workers=2, progress=False).run_dir


def test_bundled_recipe_counts_and_sql_views(bundled_run):
    stats = {r["stage"]: r for r in sql.query(bundled_run, "SELECT * FROM stats").to_pylist()}
    kept = sql.query(bundled_run, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert stats["read"]["docs_in"] == 91 + 999 + 100 + 1000 and stats["read"]["quarantined"] == 0
    assert stats["read"]["docs_in"] == kept + sum(r["removed"] for r in stats.values())
    by_source = {(r["source"], r["lang"]): r["n"] for r in sql.query(bundled_run, (
        "SELECT source, lang, count(*) AS n FROM docs GROUP BY ALL")).to_pylist()}
    assert by_source[("alpaca_en_demo", "en")] > 900 and by_source[("belle_dev1k_zh", "zh")] > 900
    turns = {r["turns"]: r["n"] for r in sql.query(
        bundled_run, "SELECT turns, count(*) AS n FROM docs GROUP BY ALL").to_pylist()}
    assert turns[1] > 1500 and turns[2] > 20  # the best OASST threads: 40 go on for a second turn
    reasons = {(r["stage"], r["reason"]) for r in sql.query(
        bundled_run, "SELECT DISTINCT stage, reason FROM removed").to_pylist()}
    assert {("conversation_filter", "refusal"), ("exact_dedup", "exact_duplicate"),
            ("minhash_dedup", "near_duplicate"), ("decontaminate", "contaminated")} <= reasons
    near = {r["prompt"]: r["kept"] for r in sql.query(bundled_run, (
        "SELECT r.prompt, d.prompt AS kept FROM removed r JOIN docs d ON d.id = r.duplicate_of "
        "WHERE r.stage = 'minhash_dedup'")).to_pylist()}
    assert near["你是谁？"] == "你是谁"  # the identity set's Chinese question, with and without its question mark
    quoted = sql.query(bundled_run, "SELECT id, contaminated_by, contaminated_item FROM removed "
                                    "WHERE stage = 'decontaminate'").to_pylist()
    # A recipe step in an Alpaca answer that is word for word a HellaSwag item's (item 6369).
    assert {"id": "alpaca_en_demo.json:821", "contaminated_by": "hellaswag", "contaminated_item": 6369} in quoted
    identity = sql.query(bundled_run, "SELECT text FROM docs WHERE source = 'identity'").column("text").to_pylist()
    assert len(identity) > 50 and not any("{{" in t for t in identity) and any("Refinery" in t for t in identity)


def test_bundled_recipe_masks_are_exactly_the_assistant_turns(bundled_run):
    tokenizer = load_tokenizer(bundled_run / "tokens/tokenizer.json")
    messages = {r["id"]: r["messages"] for r in sql.query(bundled_run, "SELECT id, messages FROM docs").to_pylist()}
    checked = 0
    for split in ("train", "validation"):
        shards = TokenShards(bundled_run / "tokens" / split)
        for row in pq.read_table(shards.folder / "index.parquet").to_pylist():
            start = int(shards.offsets[row["shard"]]) + row["offset"]
            tokens = shards.span(start, start + row["length"])
            mask = shards.span(start, start + row["length"], mask=True)
            conversation = messages[row["doc_id"].split("#copy")[0]]
            answers = "".join(m["content"] + END for m in conversation if m["role"] == "assistant")
            assert tokenizer.decode(tokens[mask == 1].tolist(), skip_special_tokens=False) == answers
            assert mask[-1] == 0
            checked += 1
    meta = json.loads((bundled_run / "tokens/train/meta.json").read_text())
    assert meta["effective_epochs"]["belle_dev1k_zh"] == pytest.approx(2.0, abs=0.15)  # weight 2 in the recipe
    assert checked > 2000 and np.isclose(meta["weights"]["belle_dev1k_zh"], 2.0)
