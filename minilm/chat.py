"""Chatting with a model in the terminal: `minilm chat PATH`.

PATH is a `.gguf` file or a Hugging Face folder (Llama, SmolLM, Qwen2 ...); the tokenizer
and its chat template come from the same place. A conversation is a list of messages that
the model's own template renders into one prompt per turn; the reply streams as it is
generated and joins the history. When the history outgrows the context window, the oldest
turns are dropped (the system prompt stays).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


class ChatError(ValueError):
    """A model or prompt that cannot be chatted with (no chat template, too long)."""


def load_pretrained(path):
    """(model, tokenizer) from a .gguf file or a Hugging Face folder of a Llama-family model, or
    from a LoRA adapter folder (PEFT's layout) or a `minilm finetune --lora` run that holds one:
    the base model its config names, with the adapter added."""
    from .models import Llama
    from .tokenizers import BPETokenizer

    path = Path(path)
    if not path.exists():
        raise ChatError(f"{path}: no such file or folder")
    adapter = adapter_folder(path)
    if adapter is not None:
        from .nn import lora

        base = lora.read_adapter_config(adapter).base_model_name_or_path
        if not base or not Path(base).exists():
            raise ChatError(f"{adapter}: the adapter's base model {base!r} (base_model_name_or_path) is not found")
        model, tokenizer = load_pretrained(base)
        return lora.load_adapter(model, adapter).eval(), tokenizer
    if not is_pretrained(path):
        raise ChatError(f"{path}: neither a .gguf file nor a Hugging Face model folder (config.json with a "
                        f"model_type); a `minilm train` run folder has no chat template to chat with")
    return Llama.from_pretrained(path), BPETokenizer.from_pretrained(path)


def adapter_folder(path) -> Path | None:
    """The LoRA adapter folder `path` is or holds (a fine-tuning run's adapter/), if any."""
    path = Path(path)
    for folder in (path, path / "adapter"):
        if (folder / "adapter_config.json").is_file():
            return folder
    return None


def is_pretrained(path) -> bool:
    """Whether `path` names a pretrained model (.gguf, a Hugging Face folder, a LoRA adapter or a
    chat-tuning run holding one), not a `minilm train` run."""
    import json

    path = Path(path)
    if path.suffix.lower() == ".gguf" or adapter_folder(path) is not None:
        return True
    config = path / "config.json"
    if not config.is_file():
        return False
    return "model_type" in json.loads(config.read_text(encoding="utf-8"))


class ChatSession:
    """A conversation with a model: the system prompt, the turns so far, and how to reply.

    `reply(text)` yields the answer's text as it is generated. Sampling follows generate's
    options; temperature 0 means greedy decoding.
    """

    def __init__(self, model, tokenizer, system: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.7, top_p: float | None = 0.9, seed: int | None = None,
                 context: int | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatError("the tokenizer has no chat template, so the model cannot be prompted as a chat")
        if temperature < 0:
            raise ChatError(f"temperature must be >= 0, got {temperature}")
        if max_new_tokens < 1:
            raise ChatError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        window = model.config.block_size
        self.context = window if context is None else min(context, window)
        if max_new_tokens >= self.context:
            raise ChatError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in a context of "
                            f"{self.context} tokens")
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.seed, self.turns = seed, 0
        self.history: list[dict] = []  # user and assistant messages, oldest first

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history = []

    def prompt_ids(self, user_text: str) -> list[int]:
        """The prompt for a reply to `user_text`: the rendered conversation, after dropping the
        oldest turns until it and the reply fit in the context window."""
        self.history.append({"role": "user", "content": user_text})
        while True:
            system = [{"role": "system", "content": self.system}] if self.system else []
            ids = self.tokenizer.apply_chat_template(system + self.history, add_generation_prompt=True)
            if len(ids) + self.max_new_tokens <= self.context:
                return ids
            if len(self.history) == 1:
                self.history.pop()
                raise ChatError(f"the message takes {len(ids)} tokens; with {self.max_new_tokens} new ones it does "
                                f"not fit in the context of {self.context}")
            del self.history[:2]  # the oldest user message and the reply to it

    def reply(self, user_text: str):
        """Yield the model's answer to `user_text` as text pieces; the whole answer joins the history."""
        from .generation import generate_stream

        ids = np.array([self.prompt_ids(user_text)], dtype=np.int64)
        eos = self.tokenizer.eos_token_id
        sampling = dict(do_sample=True, temperature=self.temperature, top_p=self.top_p) if self.temperature > 0 \
            else dict(do_sample=False)
        seed = None if self.seed is None else self.seed + self.turns
        self.turns += 1
        decoder, answer = self.tokenizer.stream_decoder(), []
        for tokens in generate_stream(self.model, ids, max_new_tokens=self.max_new_tokens, eos_token_id=eos,
                                      seed=seed, **sampling):
            token = int(tokens[0])
            if token == eos:
                break
            piece = decoder.push(token)
            if piece:
                answer.append(piece)
                yield piece
        tail = decoder.flush()
        if tail:
            answer.append(tail)
            yield tail
        self.history.append({"role": "assistant", "content": "".join(answer)})


def interact(session: ChatSession, read=input, write=sys.stdout.write) -> None:
    """The terminal loop: a line in, the streamed reply out; /reset forgets, /exit (or EOF) ends."""
    write("Chatting; /reset starts over, /exit ends.\n")
    while True:
        try:
            line = read("> ")
        except EOFError:
            write("\n")
            return
        text = line.strip()
        if text == "/exit":
            return
        if text == "/reset":
            session.reset()
            write("(conversation reset)\n")
            continue
        if not text:
            continue
        try:
            for piece in session.reply(text):
                write(piece)
                sys.stdout.flush()
        except ChatError as error:
            write(f"({error})")
        write("\n")
