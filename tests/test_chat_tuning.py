"""Chat fine-tuning: conversation files, assistant-only labels found through the chat template,
packing, the built-in instruction set, and `minilm finetune --model ... --lora` end to end on a
tiny Llama (run folder, resume, PEFT adapter, `minilm chat RUN`)."""

import json

import numpy as np
import pytest

import minilm as ml
from minilm.cli import main
from minilm.models import Llama, LlamaConfig
from minilm.tokenizers import BPETokenizer
from minilm.train.chat_data import (
    IGNORE,
    ChatDataError,
    builtin_instructions,
    collate,
    encode_conversation,
    encode_examples,
    pack,
    read_conversations,
)

pytest.importorskip("jinja2", reason="chat templates are rendered with Jinja2")

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer():
    tokenizer = BPETokenizer({bytes([i]): i for i in range(256)}, pattern="gpt2",
                             special_tokens={"<|im_start|>": 256, "<|im_end|>": 257})
    tokenizer.chat_template, tokenizer.eos_token_id = CHATML, 257
    return tokenizer


CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Ciao"}]


def test_labels_cover_exactly_the_assistant_turns():
    tokenizer = _tokenizer()
    ids, labels = encode_conversation(tokenizer, CONVERSATION)
    assert ids == tokenizer.apply_chat_template(CONVERSATION)
    labelled = [i for i, label in enumerate(labels) if label != IGNORE]
    assert all(labels[i] == ids[i] for i in labelled)
    spans = tokenizer.decode([ids[i] for i in labelled])
    assert spans == "Hello!<|im_end|>\nCiao<|im_end|>\n"  # the replies and their end-of-turn markers


def test_a_template_that_rewrites_earlier_turns_is_refused():
    tokenizer = _tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ messages | length }}"
    with pytest.raises(ChatDataError, match="prefix"):
        encode_conversation(tokenizer, CONVERSATION)


def test_jsonl_forms_and_errors_name_file_and_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION[1:3]}) + "\n\n"
                    + json.dumps({"prompt": "2+2?", "completion": "4"}) + "\n", encoding="utf-8")
    assert read_conversations(path) == [CONVERSATION[1:3], [{"role": "user", "content": "2+2?"},
                                                            {"role": "assistant", "content": "4"}]]
    for line, message in [("{oops", "line 2: invalid JSON"),
                          (json.dumps({"prompt": "x"}), "line 2: 'completion' must be a string"),
                          (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "line 2: messages.0. has role"),
                          (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "line 2: no assistant"),
                          (json.dumps({"text": "x"}), "line 2: expected a 'messages' list")]:
        path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(ChatDataError, match=f"chat.jsonl, {message}"):
            read_conversations(path)


def test_truncation_packing_and_collation():
    tokenizer = _tokenizer()
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    long_question = [{"role": "user", "content": "q" * 100}, {"role": "assistant", "content": "b"}]
    examples, dropped = encode_examples(tokenizer, [short, long_question, short], max_length=40)
    assert dropped == 1 and len(examples) == 2  # the answer of the long one falls past 40 tokens
    rows = pack(examples * 3, max_length=60)
    assert [len(ids) for ids, _ in rows] == [2 * len(examples[0][0])] * 3
    batch = collate([examples[0], (examples[0][0][:5], examples[0][1][:5])], pad_id=257)
    assert batch["ids"].shape == batch["targets"].shape == (2, len(examples[0][0]) - 1)
    np.testing.assert_array_equal(batch["targets"][0], examples[0][1][1:])
    assert (batch["targets"][1, 4:] == IGNORE).all() and (batch["ids"][1, 5:] == 257).all()


def test_builtin_instructions_are_deterministic_with_a_held_out_split():
    train, held_out = builtin_instructions()
    again = builtin_instructions()
    assert (train, held_out) == again
    assert len(train) > 100 and 10 <= len(held_out) < len(train) / 4
    questions = {c[0]["content"] for c in train}
    assert not questions & {c[0]["content"] for c in held_out}
    pairs = {c[0]["content"]: c[1]["content"] for c in train + held_out}
    assert pairs["What does the built-in function `len` do?"] == "Return the number of items in a container."
    assert any(q.startswith("Explain the `for` statement") for q in pairs)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    """A tiny random Llama with the byte tokenizer and a ChatML template, as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-chat")
    ml.manual_seed(0)
    Llama(LlamaConfig(vocab_size=258, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=256, eos_token_id=257,
                      tie_word_embeddings=True)).save_pretrained(folder)
    _tokenizer().save_tokenizer_json(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>"}))
    return folder


def test_finetune_lora_run_resume_and_chat(tiny_chat_model, tmp_path, capsys):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}", "completion": w}) + "\n"
                            for w in ("yes", "no", "maybe", "ok", "fine", "sure", "never", "always", "hi", "bye")))
    common = ["--model", str(tiny_chat_model), "--lora", "--data", str(data), "--batch-size", "4", "--lr", "1e-2",
              "--out-dir", str(tmp_path), "--name", "run", "--target-modules", "q_proj,v_proj,down_proj",
              "--gradient-checkpointing", "--show-answers", "1", "--quiet"]
    assert main(["finetune", *common, "--steps", "6"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    before, after = (float(x) for x in out.split("held-out loss (assistant tokens) ")[1].split()[0:3:2])
    assert after < before
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj", "down_proj"]
    assert config["base_model_name_or_path"] == str(tiny_chat_model.resolve())
    checkpoint = ml.serialization.load_file(run / "checkpoint" / "model.safetensors")
    assert checkpoint and all(".lora_" in name for name in checkpoint)  # the frozen base is not copied
    assert (run / "answers.txt").read_text().startswith("Q: ")

    assert main(["finetune", "--resume", str(run), "--steps", "8", "--quiet", "--show-answers", "0"]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if "loss" in r] == list(range(1, 9))
    capsys.readouterr()
    assert main(["chat", str(run), "--prompt", "Say yes", "--temperature", "0", "--max-new-tokens", "4"]) == 0
    reply = capsys.readouterr().out
    from minilm.chat import load_pretrained

    model, tokenizer = load_pretrained(run)
    ids = np.array([tokenizer.apply_chat_template([{"role": "user", "content": "Say yes"}],
                                                  add_generation_prompt=True)])
    greedy = model.generate(ids, max_new_tokens=4, eos_token_id=257)[0, ids.shape[1]:]
    assert reply == tokenizer.decode([int(t) for t in greedy if int(t) != 257]) + "\n"  # the reply, then a newline


def test_lora_resume_from_a_trainable_only_checkpoint_continues_exactly(tiny_chat_model, tmp_path):
    """Interrupted after 3 steps and resumed to 6, a LoRA run ends with the adapters of an
    uninterrupted one, although its checkpoint holds only the adapters."""
    from minilm.chat import load_pretrained
    from minilm.nn import lora
    from minilm.train import ChatTuningTask, Trainer, TrainingConfig

    train, held_out = builtin_instructions()

    def trainer(out_dir):
        ml.manual_seed(0)  # the same adapter initialisation in each
        model, tokenizer = load_pretrained(tiny_chat_model)
        lora.add_adapters(model, lora.LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj", "o_proj"]))
        train_examples, _ = encode_examples(tokenizer, train[:20], 128)
        val_examples, _ = encode_examples(tokenizer, held_out[:4], 128)
        task = ChatTuningTask(train_examples, val_examples, batch_size=2, pad_id=257, seed=1)
        config = TrainingConfig(max_steps=6, batch_size=2, lr=1e-2, warmup_steps=2, eval_interval=3,
                                checkpoint_interval=3)
        return Trainer(model, task, config, out_dir=out_dir, quiet=True)

    whole = trainer(tmp_path / "whole")
    whole.fit()
    first = trainer(tmp_path / "parts")
    first.fit(stop_at_step=3)
    second = trainer(tmp_path / "parts")
    second.load_checkpoint(tmp_path / "parts" / "checkpoint")
    second.fit()
    expected, got = lora.adapter_state_dict(whole.model), lora.adapter_state_dict(second.model)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_bert_finetune_still_needs_data(capsys):
    assert main(["finetune", "--steps", "1"]) == 2
    assert "needs --data" in capsys.readouterr().err
