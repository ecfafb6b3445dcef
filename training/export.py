"""Export a GPT checkpoint to the Hugging Face Llama format, loadable with `LlamaForCausalLM.from_pretrained`.

Our GPT is a Llama without grouped-query attention, so the export renames weights and splits the fused
qkv matrix; nothing is approximated:
- RMSNorm: x * rsqrt(mean(x²) + eps) in float32, then times the gain: Llama's, with rms_norm_eps = norm_eps.
- RoPE: pairs (i, i + head_dim/2) rotated by position * theta^(-2i/head_dim): Llama's rotate_half layout,
  so q and k need no permutation; rope_theta = rope_theta.
- SwiGLU: down(silu(gate(x)) * up(x)): Llama's MLP with hidden_act silu; no biases anywhere.
- Attention: softmax(q·k / sqrt(head_dim)), num_key_value_heads = num_attention_heads.

Written: config.json, model.safetensors, generation_config.json, tokenizer.json (the checkpoint's),
tokenizer_config.json (with the chat template for chat models) and README.md, the model card
(training/model_card.py; never over a README.md of the user's). Every file is written atomically. Refinery's
documents start after an EOS, so the EOS token is also the exported model's BOS: prompts should begin with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from refinery.corpora.atomic import atomic_path, write_text
from refinery.tokenization.chat import END, ROLE_MARKERS
from refinery.tokenization.tokenizer import load_tokenizer
from refinery.training.checkpoint import (
    CheckpointError,
    checkpoint_folder,
    load_checkpoint,
    read_config,
    user_permissions,
)
from refinery.training.generate import is_chat_model
from refinery.training.model import GPT, GPTConfig
from refinery.training.model_card import write_model_card

# Our names inside a block -> Llama's inside model.layers.N
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight",
    "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}

# render_chat's template in Jinja, for tokenizer.apply_chat_template (a test checks that the two agree)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '" + END + "\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '" + ROLE_MARKERS["assistant"] + "' }}{% endif %}"
)


def llama_state_dict(model: GPT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's weights under LlamaForCausalLM's names (each its own contiguous tensor, as safetensors needs)."""
    weights = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    if not model.config.tie_embeddings:
        weights["lm_head.weight"] = model.head.weight
    for number, block in enumerate(model.blocks):
        prefix = f"model.layers.{number}."
        query, key, value = block.attn.qkv.weight.chunk(3, dim=0)  # the order CausalSelfAttention splits them in
        weights.update({prefix + "self_attn.q_proj.weight": query, prefix + "self_attn.k_proj.weight": key,
                        prefix + "self_attn.v_proj.weight": value})
        own = dict(block.named_parameters())
        weights.update({prefix + llama: own[ours] for ours, llama in BLOCK_NAMES.items()})
    return {name: tensor.detach().to("cpu", dtype).contiguous().clone() for name, tensor in weights.items()}


def llama_config(config: GPTConfig, special: dict, dtype: str = "float32") -> dict:
    head_dim = config.n_embd // config.n_head
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4.x reads this
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # transformers 5 reads this
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": special["eos"],  # documents start after an EOS: it is the model's start of text
        "eos_token_id": special["eos"],
        "pad_token_id": special.get("pad"),
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": dtype,
    }


def export_llama(checkpoint: str | Path, out: str | Path, dtype: str = "float32", licence: str | None = None) -> Path:
    """Write the checkpoint's GPT as a Hugging Face Llama model folder, with its model card; returns the folder.

    `licence` is the model's licence for the card's metadata (a Hub licence id); without one the card says
    `other`, `license_name: unknown`."""
    folder = checkpoint_folder(checkpoint)
    model, config, tokenizer_path = load_checkpoint(folder)
    _, info = read_config(folder)
    if not isinstance(model, GPT):
        raise CheckpointError(f"{folder} holds an {type(model).__name__}: only the GPT has a Llama equivalent")
    if config.document_attention:
        print("note: Llama attends across documents; the export matches this model on inputs of one document")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    special = info["special_ids"]
    chat = is_chat_model(info) and special.get("end") is not None
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(llama_state_dict(model, getattr(torch, dtype)), str(tmp), metadata={"format": "pt"})
    user_permissions(out / "model.safetensors")  # safetensors writes 0600: an export is for others to read
    _write_json(out / "config.json", llama_config(config, special, dtype))
    stop_ids = [special["eos"], special["end"]] if chat else special["eos"]
    _write_json(out / "generation_config.json", {"bos_token_id": special["eos"], "eos_token_id": stop_ids,
                                                 "pad_token_id": special.get("pad"), "do_sample": True,
                                                 "temperature": 0.8, "top_k": 200})
    with atomic_path(out / "tokenizer.json") as tmp:
        shutil.copyfile(tokenizer_path, tmp)  # a new file: the umask's permissions, not the checkpoint's
    tokenizer = load_tokenizer(tokenizer_path)
    names = {key: tokenizer.id_to_token(special[key]) if special.get(key) is not None else None for key in
             ("eos", "pad")}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": names["eos"],
                        "eos_token": names["eos"], "pad_token": names["pad"], "add_bos_token": False,
                        "add_eos_token": False, "model_max_length": config.block_size, "clean_up_tokenization_spaces":
                        False}
    if chat:
        tokenizer_config["chat_template"] = CHAT_TEMPLATE
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    if write_model_card(out, folder, model, info, licence, chat) is None:
        print(f"note: {out / 'README.md'} is not a card Refinery wrote (no marker line): left as it is")
    return out


def _write_json(path: Path, value: dict) -> None:
    """Keys in the order written (atomic.write_json sorts them): config.json reads as Llama's own do."""
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
