"""Chat templates on real conversations: byte-exact to each format's reference, spans exactly the assistant turns."""

from __future__ import annotations

import json

import pytest

from refinery.tokenization.templates import (
    CHATML,
    LLAMA3,
    TemplateError,
    alpaca_template,
    get_template,
    load_jinja_template,
)

# Reference Jinja templates, as their tokenizer_config.json files ship them: Meta-Llama-3-8B-Instruct, and the
# ChatML template of the Hugging Face chat-templating documentation.
LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM = "You are a helpful assistant."  # Qwen's default system prompt


@pytest.fixture(scope="module")
def chats(data_dir):
    """Real conversations: ShareGPT multi-turn, Alpaca single-turn, BELLE Chinese, glaive tool calls."""
    roles = {"human": "user", "gpt": "assistant", "function_call": "tool_call", "observation": "tool"}

    def sharegpt(record: dict) -> list[dict]:
        return [{"role": roles[t["from"]], "content": t["value"]} for t in record["conversations"]]

    def alpaca(record: dict) -> list[dict]:
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]

    folder = data_dir / "instructions"
    belle = [json.loads(line) for line in (folder / "belle_dev1k_zh.json").read_text().splitlines()[:30]]
    return {
        "multi_turn": [sharegpt(r) for r in json.loads((folder / "sharegpt_dummy_conversation.json").read_text())[:30]],
        "alpaca": [alpaca(r) for r in json.loads((folder / "alpaca_en_demo.json").read_text())[:30]],
        "chinese": [alpaca(r) for r in belle],
        "tools": [sharegpt(r) for r in json.loads((folder / "glaive_toolcall_en_demo.json").read_text())[:30]],
    }


def assert_spans_are_the_answers(rendered, messages: list[dict], end: str, wrap: str = "{content}") -> None:
    answers = [m for m in messages if m["role"] in ("assistant", "tool_call")]
    assert len(rendered.spans) == len(answers)
    for (start, stop), message in zip(rendered.spans, answers):
        written = wrap if message["role"] == "tool_call" else "{content}"
        assert rendered.text[start:stop] == written.replace("{content}", message["content"]) + end
    starts = [s for s, _ in rendered.spans]
    assert starts == sorted(starts) and all(a[1] <= b[0] for a, b in zip(rendered.spans, rendered.spans[1:]))


def test_chatml_golden_multi_turn(chats):
    messages = chats["multi_turn"][0]
    rendered = CHATML.render(messages)
    assert rendered.text == (
        "<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\nI am Vicuna, a language model trained by researchers from Large Model Systems "
        "Organization (LMSYS).<|im_end|>\n"
        "<|im_start|>user\nHave a nice day!<|im_end|>\n"
        "<|im_start|>assistant\nYou too!<|im_end|>\n")
    assert_spans_are_the_answers(rendered, messages, "<|im_end|>")
    for messages in chats["multi_turn"] + chats["chinese"]:
        assert_spans_are_the_answers(CHATML.render(messages), messages, "<|im_end|>")


def test_llama3_golden_chinese_with_system(chats):
    messages = [{"role": "system", "content": SYSTEM}, *chats["chinese"][0]]
    question, answer = messages[1]["content"], messages[2]["content"]
    rendered = LLAMA3.render(messages)
    assert rendered.text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{answer}<|eot_id|>")
    assert question.startswith("题目：小明每天早上")
    assert rendered.text[slice(*rendered.spans[0])] == answer + "<|eot_id|>"
    for messages in chats["chinese"] + chats["multi_turn"]:
        assert_spans_are_the_answers(LLAMA3.render(messages), messages, "<|eot_id|>")


def test_alpaca_golden_is_stanford_alpacas_training_text(chats):
    messages = chats["alpaca"][0]
    rendered = alpaca_template("</s>").render(messages)
    # stanford_alpaca train.py: PROMPT_DICT["prompt_no_input"].format_map(example) + f"{output}{eos_token}"
    prompt_no_input = ("Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:")
    assert rendered.text == prompt_no_input.format(instruction=messages[0]["content"]) + messages[1]["content"] + "</s>"
    assert_spans_are_the_answers(rendered, messages, "</s>")
    with_system = alpaca_template("<|eos|>").render([{"role": "system", "content": SYSTEM}, *chats["multi_turn"][0]])
    assert with_system.text == (
        "You are a helpful assistant.\n\n### Instruction:\nWho are you?\n\n### Response:I am Vicuna, a language model "
        "trained by researchers from Large Model Systems Organization (LMSYS).<|eos|>### Instruction:\nHave a nice "
        "day!\n\n### Response:You too!<|eos|>")
    assert [with_system.text[s:e] for s, e in with_system.spans][1] == "You too!<|eos|>"


def test_refinery_golden(chats):
    rendered = get_template("refinery").render([{"role": "system", "content": SYSTEM}, *chats["multi_turn"][0]])
    assert rendered.text == (
        "<|system|>You are a helpful assistant.<|end|>\n<|user|>Who are you?<|end|>\n<|assistant|>I am Vicuna, a "
        "language model trained by researchers from Large Model Systems Organization (LMSYS).<|end|>\n<|user|>Have a "
        "nice day!<|end|>\n<|assistant|>You too!<|end|>\n")
    for messages in chats["chinese"] + chats["multi_turn"]:
        assert_spans_are_the_answers(get_template("refinery").render(messages), messages, "<|end|>")


def test_tokenizer_jinja_templates_agree_with_the_built_ins(chats, tmp_path):
    (tmp_path / "llama3").mkdir()
    (tmp_path / "llama3/tokenizer_config.json").write_text(json.dumps({
        "chat_template": LLAMA3_JINJA, "bos_token": "<|begin_of_text|>",
        "eos_token": {"content": "<|eot_id|>", "lstrip": False, "normalized": False, "rstrip": False}}))
    (tmp_path / "chatml").mkdir()
    (tmp_path / "chatml/tokenizer_config.json").write_text(json.dumps({
        "chat_template": [{"name": "default", "template": CHATML_JINJA}], "eos_token": "<|im_end|>"}))
    llama3 = get_template(str(tmp_path / "llama3/tokenizer_config.json"))
    chatml = load_jinja_template(tmp_path / "chatml/tokenizer_config.json")
    for messages in chats["multi_turn"] + chats["chinese"] + chats["alpaca"]:
        assert chatml.render(messages) == CHATML.render(messages)
        # Llama 3's template trims every message: the built-in renders trimmed contents the same way.
        trimmed = [{**m, "content": m["content"].strip()} for m in messages]
        assert llama3.render(messages) == LLAMA3.render(trimmed)
    assert any(m["content"] != m["content"].strip() for c in chats["chinese"] for m in c)  # trimming was exercised


def test_jinja_templates_that_cannot_be_masked_are_refused(chats, tmp_path):
    upper = load_jinja_template_from(tmp_path, "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}")
    with pytest.raises(TemplateError, match="changes message content"):
        upper.render(chats["alpaca"][0])
    alternate = load_jinja_template_from(tmp_path, (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"))
    with pytest.raises(TemplateError, match="roles must alternate"):
        alternate.render([{"role": "system", "content": SYSTEM}, *chats["alpaca"][0]])
    with pytest.raises(ValueError, match="not valid Jinja"):
        load_jinja_template_from(tmp_path, "{% for m in messages %}")


def load_jinja_template_from(folder, source: str):
    path = folder / "chat_template.jinja"
    path.write_text(source)
    return load_jinja_template(path)


def test_tool_calls(chats):
    conversation = chats["tools"][0]
    rendered = CHATML.render(conversation)
    assert "<|im_start|>assistant\n<tool_call>\n{\"name\": \"search_recipes\"" in rendered.text
    assert "<|im_start|>user\n<tool_response>\n{\"recipes\": " in rendered.text
    assert_spans_are_the_answers(rendered, conversation, "<|im_end|>", wrap="<tool_call>\n{content}\n</tool_call>")
    assert_spans_are_the_answers(LLAMA3.render(conversation), conversation, "<|eot_id|>")
    assert "<|start_header_id|>ipython<|end_header_id|>" in LLAMA3.render(conversation).text
    for template in (get_template("refinery"), alpaca_template("</s>")):
        with pytest.raises(TemplateError, match="tool_call"):
            template.render(conversation)
