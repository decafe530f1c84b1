"""Conversations for fine-tuning a chat model: reading them, rendering them with the model's chat
template, and labelling only what the assistant says.

A conversation file is JSONL, one example a line, in either form:

    {"messages": [{"role": "system", "content": ...}, {"role": "user", ...}, {"role": "assistant", ...}]}
    {"prompt": "What does len() do?", "completion": "Return the number of items in a container."}

Each example becomes token ids (the whole conversation as the model's template renders it) and
labels: the ids of the assistant's turns, -100 everywhere else, so the loss teaches the answers
and not the questions. The assistant's spans are found by rendering prefixes of the
conversation: the tokens between "everything before this reply, plus the opening of the
assistant's turn" and "everything up to and including this reply" are the reply (with the
template's end-of-turn marker, which the model must learn to emit to stop).

With no file, `builtin_instructions()` makes questions and answers from the documentation that
ships with CPython (the built-in functions' and str/list/dict methods' docstrings, and pydoc's
help topics), deterministically, with a held-out split.
"""

from __future__ import annotations

import builtins
import hashlib
import inspect
import json
import re
from pathlib import Path

import numpy as np

from ..data import read_text_file

IGNORE = -100  # the label of a token the loss skips (cross_entropy's ignore_index)
ROLES = ("system", "user", "assistant", "tool")


class ChatDataError(ValueError):
    """A conversation file that cannot be used, with the file and line named."""


def read_conversations(path) -> list[list[dict]]:
    """The conversations of a JSONL file (messages or prompt/completion lines), as message lists."""
    path = Path(path)
    lines = read_text_file(path, ChatDataError).splitlines()
    conversations = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ChatDataError(f"{where}: invalid JSON ({error.msg}, column {error.colno})") from None
        conversations.append(_messages_of(record, where))
    if not conversations:
        raise ChatDataError(f"{path}: no examples (expected JSONL lines with 'messages' or 'prompt'/'completion')")
    return conversations


def _messages_of(record, where: str) -> list[dict]:
    if not isinstance(record, dict):
        raise ChatDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ChatDataError(f"{where}: 'messages' must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise ChatDataError(f"{where}: messages[{i}] needs a string 'content'")
            if message.get("role") not in ROLES:
                raise ChatDataError(f"{where}: messages[{i}] has role {message.get('role')!r}, not one of {ROLES}")
        if not any(m["role"] == "assistant" for m in messages):
            raise ChatDataError(f"{where}: no assistant message, so nothing to learn")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if "prompt" in record or "completion" in record:
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str):
                raise ChatDataError(f"{where}: {key!r} must be a string")
        return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    raise ChatDataError(f"{where}: expected a 'messages' list or 'prompt' and 'completion' fields, "
                        f"got keys {sorted(record)}")


def encode_conversation(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(ids, labels) of one conversation: labels are the ids on the assistant's turns, -100 elsewhere."""
    ids = tokenizer.apply_chat_template(messages)
    labels = [IGNORE] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True))
        upto = tokenizer.apply_chat_template(messages[: i + 1])
        if ids[: len(upto)] != upto or start > len(upto):
            raise ChatDataError("the chat template renders a conversation's beginning differently from the whole "
                                "conversation, so the assistant's tokens cannot be found by prefix; "
                                f"first message: {messages[0]['content'][:60]!r}")
        labels[start: len(upto)] = ids[start: len(upto)]
    return ids, labels


def encode_examples(tokenizer, conversations, max_length: int) -> tuple[list, int]:
    """([(ids, labels)], number dropped): each conversation encoded and cut to max_length tokens;
    one with no assistant token left inside that length is dropped (it would teach nothing)."""
    examples, dropped = [], 0
    for messages in conversations:
        ids, labels = encode_conversation(tokenizer, messages)
        ids, labels = ids[:max_length], labels[:max_length]
        if sum(label != IGNORE for label in labels[1:]) == 0:  # the first position is never a target
            dropped += 1
            continue
        examples.append((ids, labels))
    return examples, dropped


def pack(examples, max_length: int) -> list:
    """Examples joined end to end into rows of up to max_length tokens (fewer padded positions;
    an example that does not fit in the current row starts a new one)."""
    rows, ids, labels = [], [], []
    for example_ids, example_labels in examples:
        if ids and len(ids) + len(example_ids) > max_length:
            rows.append((ids, labels))
            ids, labels = [], []
        ids, labels = ids + list(example_ids), labels + list(example_labels)
    if ids:
        rows.append((ids, labels))
    return rows


def collate(examples, pad_id: int) -> dict:
    """A batch: inputs and next-token targets [B, T-1], right-padded (padding targets -100).

    Right padding needs no attention mask under causal attention: no real token attends to a later pad.
    """
    length = max(len(ids) for ids, _ in examples)
    ids = np.full((len(examples), length), pad_id, dtype=np.int64)
    labels = np.full((len(examples), length), IGNORE, dtype=np.int64)
    for row, (example_ids, example_labels) in enumerate(examples):
        ids[row, : len(example_ids)] = example_ids
        labels[row, : len(example_labels)] = example_labels
    return {"ids": ids[:, :-1], "targets": labels[:, 1:]}  # position t predicts token t+1


# ---------------------------------------------------------------------------------------
# The built-in instruction set: questions answered by CPython's own documentation
# ---------------------------------------------------------------------------------------
def _first_sentences(text: str, count: int = 2, limit: int = 320) -> str | None:
    """The first `count` sentences of a documentation paragraph, whitespace collapsed (one if two
    are longer than `limit`; None if one is)."""
    paragraph = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", paragraph)
    answer = " ".join(sentences[:count])
    if len(answer) > limit:
        answer = sentences[0]
    return answer if len(answer) <= limit else None


def _doc_paragraph(doc: str) -> str | None:
    """The first prose paragraph of a docstring (signature lines like `len(obj, /)` skipped)."""
    for paragraph in re.split(r"\n\s*\n", doc.strip()):
        first = paragraph.strip().splitlines()[0] if paragraph.strip() else ""
        if not first or re.match(r"^[\w.]+\(.*\)( -+> .*)?$", first) or first.startswith(("--", ">>>")):
            continue
        return paragraph
    return None


# Added to builtins by the site module (interactive helpers), not part of the language.
SITE_NAMES = {"copyright", "credits", "exit", "help", "license", "quit"}


def _builtin_questions() -> list[tuple[str, str]]:
    candidates = []
    for name in sorted(set(dir(builtins)) - SITE_NAMES):
        value = getattr(builtins, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type) and issubclass(value, BaseException):
            continue
        kind = "class" if isinstance(value, type) else "function"
        candidates.append((f"What does the built-in {kind} `{name}` do?", value))
    for owner in (str, list, dict):
        for name in sorted(vars(owner)):
            if not name.startswith("_"):
                candidates.append((f"What does the `{owner.__name__}.{name}()` method do?", getattr(owner, name)))
    pairs = []
    for question, value in candidates:
        doc = inspect.getdoc(value)
        paragraph = _doc_paragraph(doc) if doc else None
        answer = _first_sentences(paragraph) if paragraph else None
        if answer:
            pairs.append((question, answer))
    return pairs


def _topic_questions() -> list[tuple[str, str]]:
    """pydoc's help topics: a title line underlined with '*', then prose and grammar blocks."""
    from pydoc_data.topics import topics

    pairs = []
    for key in sorted(topics):
        lines = topics[key].strip().splitlines()
        if len(lines) < 3 or not set(lines[1]) <= {"*"}:
            continue
        title = lines[0].strip().replace('"', "`")
        # Indented blocks are examples; "::=" lines grammar; a paragraph ending in ":" introduces one.
        prose = [p for p in re.split(r"\n\s*\n", "\n".join(lines[2:]))
                 if p.strip() and not p.startswith(" ") and "::=" not in p and not p.rstrip().endswith(":")]
        answer = _first_sentences(prose[0]) if prose else None
        if answer:
            subject = title[0].lower() + title[1:] if not title.startswith("`") else title
            pairs.append((f"Explain {subject} in Python.", answer))
    return pairs


def builtin_instructions(held_out: float = 0.1) -> tuple[list, list]:
    """(train, held-out) conversations made from CPython's documentation; the same on every run
    of the same Python (the split is by a hash of the question, not by a random generator)."""
    pairs = _builtin_questions() + _topic_questions()
    train, test = [], []
    for question, answer in pairs:
        digest = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:4], "little")
        conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        (test if digest % 1000 < held_out * 1000 else train).append(conversation)
    return train, test
