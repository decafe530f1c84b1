"""`minilm chat`: the one-shot form on the real SmolLM2, and the conversation bookkeeping
(context window, system prompt, /reset, /exit) on a tiny random model with SmolLM2's tokenizer."""

import pytest

import minilm as ml
from minilm.chat import ChatError, ChatSession, interact
from minilm.cli import main
from minilm.models import Llama, LlamaConfig
from minilm.tokenizers import BPETokenizer
from tests.helpers import smollm2_gguf_path

pytest.importorskip("jinja2", reason="chat templates are rendered with Jinja2")


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.from_pretrained(smollm2_gguf_path())


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=512)
    return Llama(config).eval()


def test_chat_prompt_answers_like_the_real_model(capsys):
    path = smollm2_gguf_path()
    assert main(["chat", str(path), "--prompt", "What is the capital of France?", "--temperature", "0"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_history_is_trimmed_to_the_context_keeping_the_system_prompt(tiny_model, tokenizer):
    session = ChatSession(tiny_model, tokenizer, system="You are terse.", max_new_tokens=8, temperature=0,
                          context=120)
    for question in ("Hello there, how are you today?", "Tell me about the sea.", "And about mountains?",
                     "What about rivers?"):
        answer = "".join(session.reply(question))
        assert session.history[-1] == {"role": "assistant", "content": answer}
        assert session.history[-2] == {"role": "user", "content": question}
    prompt = session.prompt_ids("One more?")
    assert len(prompt) + session.max_new_tokens <= 120
    assert len(session.history) < 9  # the oldest turns were dropped ...
    assert "You are terse." in tokenizer.decode(prompt)  # ... the system prompt was not


def test_a_message_longer_than_the_context_is_refused(tiny_model, tokenizer):
    session = ChatSession(tiny_model, tokenizer, max_new_tokens=8, temperature=0, context=60)
    with pytest.raises(ChatError, match="does not fit in the context of 60"):
        list(session.reply("word " * 100))
    assert session.history == []


def test_greedy_replies_repeat_and_seeded_samples_reproduce(tiny_model, tokenizer):
    def answer(**options):
        return "".join(ChatSession(tiny_model, tokenizer, max_new_tokens=6, **options).reply("Hi"))

    assert answer(temperature=0) == answer(temperature=0)
    assert answer(temperature=1.0, seed=3) == answer(temperature=1.0, seed=3)


def test_interactive_loop_resets_and_exits(tiny_model, tokenizer):
    session = ChatSession(tiny_model, tokenizer, max_new_tokens=4, temperature=0)
    lines = iter(["Hi", "/reset", "", "Hello", "/exit", "never read"])
    output = []
    interact(session, read=lambda prompt: next(lines), write=output.append)
    text = "".join(output)
    assert "(conversation reset)" in text
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["Hello"]
    assert next(lines) == "never read"


def test_a_tokenizer_without_chat_template_is_an_error(tiny_model):
    with pytest.raises(ChatError, match="no chat template"):
        ChatSession(tiny_model, BPETokenizer({bytes([i]): i for i in range(256)}, pattern="gpt2"))


def test_missing_path_is_a_command_error(tmp_path, capsys):
    assert main(["chat", str(tmp_path / "nothing.gguf"), "--prompt", "hi"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_generate_continues_a_prompt_with_a_gguf_model(capsys):
    path = smollm2_gguf_path()
    assert main(["generate", str(path), "--prompt", "The capital of France is", "--greedy",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The capital of France is") and "Paris" in out


def test_a_minilm_run_folder_is_refused_with_a_reason(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model": "gpt", "model_config": {}}')
    assert main(["chat", str(tmp_path), "--prompt", "hi"]) == 2
    assert "no chat template" in capsys.readouterr().err
