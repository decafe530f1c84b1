"""Tokenizers from GGUF files and chat templates, against Hugging Face's reading of the
same files (transformers' GGUF loading and `apply_chat_template`) and the `tokenizers`
library's pre-tokenizers."""

import copy
import pathlib
import random
import sys
import sysconfig

import pytest
import regex

from minilm.tokenizers import BPETokenizer, bpe
from minilm.tokenizers.byte_pair import recover_merges
from minilm.tokenizers.chat import ChatTemplateError, _compile
from minilm.tokenizers.formats import bytes_to_printable
from minilm.tokenizers.patterns import LLAMA3_PATTERN, QWEN2_PATTERN, SMOLLM_PATTERN

from ..helpers import oracle, smollm2_gguf_path
from .conftest import VARIED_TEXTS

# Text a model tokenizer meets: code, CJK, emoji, whitespace runs, digits, and special
# tokens inside ordinary text.
MODEL_TEXTS = [
    *VARIED_TEXTS,
    "x = [1, 22, 333]\nfor i in range(10):\n    print(f'{i:>4}')  # 3.5e-7\n",
    "价格是 1234.56 元，约合 ¥1,234 🚀🚀 ok",
    "tabs\tand\u00a0non-breaking\u2003spaces, 2024-11-29T14:04:00Z",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text before <|endoftext|>and after<|im_end|>",
    "DON'T shout, it's FINE. We've 99 problems",
]
# Whitespace runs before digits: here transformers' GGUF loading splits SmolLM text
# differently from SmolLM2's own tokenizer (see test_smollm2_whitespace_before_digits).
WHITESPACE_BEFORE_DIGITS = ["a  1", "total:   42", "x\n\n 7", "  123   456"]

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'tool' %}{{ raise_exception('no tool messages') }}{% endif %}"
    "{{ bos_token + m['role'] + ':\n' + m['content'] | trim + eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ bos_token + 'assistant:\n' }}{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "Comment ça va? 😀\n  Indented\tline 123"},
    ],
    [{"role": "user", "content": "Say <|im_end|> literally"}, {"role": "assistant", "content": "  spaces  "}],
]


def hf_chat_ids(hf_tokenizer, messages, add_generation_prompt):
    # transformers 5 returns a BatchEncoding here, earlier versions a list of ids
    result = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    return list(result["input_ids"] if hasattr(result, "keys") else result)


@pytest.fixture(scope="module")
def transformers():
    oracle("torch", reason="transformers needs torch")
    return oracle("transformers", reason="transformers' GGUF tokenizer loading is the oracle")


@pytest.fixture(scope="module")
def gguf():
    return oracle("gguf", reason="the gguf package writes the test files")


@pytest.fixture(scope="module")
def small_bpe():
    text = (pathlib.Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text(encoding="utf-8")[:60000]
    text += "\n中文文本，混合数字。日本語のテキスト。😀👍 Привет мир 12 345\n"
    return BPETokenizer.train(text, 700, pattern="gpt4")


def write_tokenizer_gguf(gguf, path, tokenizer, pre, add_bos=False, chat_template=CHAT_TEMPLATE, drop_byte=None):
    """A GGUF file holding only `tokenizer` (as llama.cpp's converter stores one)."""
    ranks = tokenizer.mergeable_ranks()
    ordered = [token for token, _ in sorted(ranks.items(), key=lambda item: item[1])]
    tokens = [bytes_to_printable(token) for token in ordered]
    token_types = [1] * len(tokens)
    if drop_byte is not None:  # a vocabulary lacking a byte (as SmolLM2's lacks 21)
        index = ordered.index(bytes([drop_byte]))
        tokens[index], token_types[index] = "<unused>", 5
    specials = ["<|begin|>", "<|end|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tokens += specials
    token_types += [3] * len(specials)
    merges = [f"{bytes_to_printable(left)} {bytes_to_printable(right)}" for left, right in recover_merges(ranks)]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tokenizer_model("gpt2")
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(token_types)
    writer.add_bos_token_id(len(ranks))
    writer.add_eos_token_id(len(ranks) + 1)
    writer.add_add_bos_token(add_bos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def with_smollm_pre_tokenizer(hf_tokenizer):
    """A copy with SmolLM2's own tokenizer.json pre-tokenizer: every digit alone, then
    GPT-2's byte-level regex (transformers' GGUF loading uses the second step only)."""
    from tokenizers import pre_tokenizers

    hf_tokenizer = copy.deepcopy(hf_tokenizer)
    hf_tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return hf_tokenizer


# ---------------------------------------------------- small GGUF files, every pattern


@pytest.mark.parametrize("pre, add_bos", [("gpt-2", False), ("llama-bpe", True), ("qwen2", False), ("smollm", True)])
def test_ids_equal_transformers_reading_the_same_gguf(transformers, gguf, small_bpe, tmp_path, pre, add_bos):
    path = write_tokenizer_gguf(gguf, tmp_path / "tok.gguf", small_bpe, pre, add_bos=add_bos)
    ours = BPETokenizer.from_pretrained(path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    if pre == "smollm":
        hf = with_smollm_pre_tokenizer(hf)
    assert ours.add_bos_token is add_bos and ours.bos_token_id == hf.bos_token_id
    texts = MODEL_TEXTS + (WHITESPACE_BEFORE_DIGITS if pre == "smollm" else [])
    for text in texts:
        assert ours.encode(text, allowed_special="all") == hf.encode(text), text
    # decoding round-trips the text, special tokens included
    assert ours.decode(ours.encode(MODEL_TEXTS[-3], allowed_special="all", add_special_tokens=False)) == MODEL_TEXTS[-3]


def test_bytes_missing_from_the_vocabulary_are_dropped_as_transformers_does(transformers, gguf, small_bpe, tmp_path):
    path = write_tokenizer_gguf(gguf, tmp_path / "tok.gguf", small_bpe, "gpt-2", drop_byte=0x04)
    ours = BPETokenizer.from_pretrained(path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in ["a\x04b", "\x04", "x \x04\x04 y"]:
        assert ours.encode(text) == hf.encode(text), repr(text)
    assert ours.encode("a\x04b") == ours.encode("ab")


def test_unknown_or_missing_pre_tokenizer_is_an_error_naming_it(gguf, small_bpe, tmp_path):
    path = write_tokenizer_gguf(gguf, tmp_path / "odd.gguf", small_bpe, "my-new-model")
    with pytest.raises(ValueError, match="tokenizer.ggml.pre='my-new-model'.*known: .*smollm"):
        BPETokenizer.from_pretrained(path)
    # an explicit pattern is the way out
    assert BPETokenizer.from_pretrained(path, pattern="gpt2").encode("hi there") == small_bpe.encode("hi there")
    missing = write_tokenizer_gguf(gguf, tmp_path / "nopre.gguf", small_bpe, None)
    with pytest.raises(ValueError, match="no 'tokenizer.ggml.pre'"):
        BPETokenizer.from_pretrained(missing)


def test_gguf_tokenizer_survives_save_and_load(gguf, small_bpe, tmp_path):
    path = write_tokenizer_gguf(gguf, tmp_path / "tok.gguf", small_bpe, "smollm", add_bos=True, drop_byte=0x05)
    original = BPETokenizer.from_pretrained(path)
    original.save(tmp_path / "tok.minilm")
    loaded = BPETokenizer.load(tmp_path / "tok.minilm")
    for name in ("pattern", "special_tokens", "bos_token_id", "eos_token_id", "add_bos_token", "add_eos_token",
                 "chat_template", "missing_bytes"):
        assert getattr(loaded, name) == getattr(original, name), name
    text = "a\x05b <|im_start|> 123  4"
    assert loaded.encode(text, allowed_special="all") == original.encode(text, allowed_special="all")


def test_bad_option_lines_are_reported(small_bpe, tmp_path):
    from minilm.tokenizers import TokenizerFileError

    small_bpe.save(tmp_path / "tok.txt")
    lines = (tmp_path / "tok.txt").read_text(encoding="utf-8").splitlines()
    for bad, message in [("option nope 1", "unknown option 'nope'"), ("option bos_token_id {", "invalid JSON"),
                         ("option bos_token_id 99999", "not a token id"), ("option add_bos_token 1", "must be a bool")]:
        (tmp_path / "bad.txt").write_text("\n".join([*lines, bad]) + "\n", encoding="utf-8")
        with pytest.raises(TokenizerFileError, match=f"line {len(lines) + 1}: .*{message}"):
            BPETokenizer.load(tmp_path / "bad.txt")


# ------------------------------------------------------------------- chat templates


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_equals_transformers(transformers, gguf, small_bpe, tmp_path, add_generation_prompt):
    path = write_tokenizer_gguf(gguf, tmp_path / "tok.gguf", small_bpe, "llama-bpe", add_bos=True)
    ours = BPETokenizer.from_pretrained(path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for messages in CONVERSATIONS:
        text = hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
        ids = hf_chat_ids(hf, messages, add_generation_prompt)
        assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False) == text
        assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == ids


def test_chat_template_from_a_hugging_face_folder(transformers, small_bpe, tmp_path):
    import json

    tokenizer = BPETokenizer(small_bpe.mergeable_ranks(), "gpt4", {"<s>": 700, "</s>": 701})
    tokenizer.save_tokenizer_json(tmp_path / "tokenizer.json")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
              "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True}, "chat_template": CHAT_TEMPLATE}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    ours = BPETokenizer.from_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert (ours.bos_token_id, ours.eos_token_id) == (700, 701)
    for messages in CONVERSATIONS:
        assert ours.apply_chat_template(messages, tokenize=False) == hf.apply_chat_template(messages, tokenize=False)
        assert ours.apply_chat_template(messages, add_generation_prompt=True) == hf_chat_ids(hf, messages, True)
    # newer transformers versions write the template to its own file, which wins
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!", encoding="utf-8")
    assert BPETokenizer.from_pretrained(tmp_path).apply_chat_template(CONVERSATIONS[0], tokenize=False).endswith("?!")


def test_chat_template_errors(small_bpe):
    with pytest.raises(ValueError, match="no chat template"):
        small_bpe.apply_chat_template(CONVERSATIONS[0])
    with pytest.raises(ChatTemplateError, match="no tool messages"):
        small_bpe.apply_chat_template([{"role": "tool", "content": "x"}], chat_template=CHAT_TEMPLATE)
    with pytest.raises(ChatTemplateError, match="does not parse"):
        small_bpe.apply_chat_template(CONVERSATIONS[0], chat_template="{% for %}")
    # the sandbox keeps templates away from Python internals
    with pytest.raises(ChatTemplateError):
        small_bpe.apply_chat_template(CONVERSATIONS[0], chat_template="{{ messages.__class__.__mro__ }}", tokenize=False)
    with pytest.raises(TypeError, match="list of"):
        small_bpe.apply_chat_template("hello", chat_template=CHAT_TEMPLATE)


def test_template_features_hugging_face_templates_use(small_bpe):
    template = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% generation %}{{ m['content'] | tojson }}{% endgeneration %}\n"
        "{% endfor %}{{ strftime_now('%Y') | length }}"
    )
    messages = [{"role": "user", "content": "café <b>"}, {"role": "user", "content": "2"}, {"role": "user", "content": "3"}]
    # trim_blocks: the newline right after a block tag ({% endgeneration %}) is dropped
    assert small_bpe.apply_chat_template(messages, chat_template=template, tokenize=False) == '"café <b>""2"4'


def test_missing_jinja2_says_how_to_install_it(small_bpe, monkeypatch):
    _compile.cache_clear()
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ImportError, match=r"pip install jinja2.*minilm\[chat\]"):
        small_bpe.apply_chat_template(CONVERSATIONS[0], chat_template=CHAT_TEMPLATE + " ")


# ------------------------------------------------------- patterns against `tokenizers`


def random_texts(count, seed=0):
    """Strings from an alphabet dense in what the patterns treat specially."""
    alphabet = list("aZé中 \t\n\r0123456789٣½'sStTlLdDmMvVrReE.,!-_😀") + [" ", "  ", "\u00a0", "'S", "'ll"]
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def split_by(pre_tokenizer, text):
    return [piece for piece, _ in pre_tokenizer.pre_tokenize_str(text)]


def test_smollm_pattern_splits_as_digits_then_byte_level():
    pre_tokenizers = oracle("tokenizers.pre_tokenizers", reason="HF tokenizers is the oracle")
    from minilm.tokenizers.formats import bytes_to_printable as printable

    reference = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    split = regex.compile(SMOLLM_PATTERN).findall
    for text in MODEL_TEXTS + WHITESPACE_BEFORE_DIGITS + random_texts(2000):
        assert [printable(piece.encode("utf-8")) for piece in split(text)] == split_by(reference, text), repr(text)


@pytest.mark.parametrize("pattern", [LLAMA3_PATTERN, QWEN2_PATTERN], ids=["llama3", "qwen2"])
def test_split_patterns_match_the_tokenizers_library(pattern):
    tokenizers = oracle("tokenizers", reason="HF tokenizers is the oracle")
    reference = tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated")
    split = regex.compile(pattern).findall
    for text in MODEL_TEXTS + random_texts(1000, seed=1):
        assert split(text) == split_by(reference, text), repr(text)


# ------------------------------------------------------------------ the real SmolLM2


@pytest.fixture(scope="module")
def smollm2_pair(transformers):
    path = smollm2_gguf_path()
    hf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return BPETokenizer.from_pretrained(path), hf


def test_smollm2_ids_equal_transformers(smollm2_pair):
    ours, hf = smollm2_pair
    assert ours.vocab_size == len(hf) == 49152
    assert (ours.bos_token_id, ours.eos_token_id, ours.add_bos_token) == (1, 2, False)
    for text in MODEL_TEXTS:
        assert ours.encode(text, allowed_special="all") == hf.encode(text), text
        ids = hf.encode(text)
        assert ours.decode(ids) == hf.decode(ids), text


def test_smollm2_whitespace_before_digits(smollm2_pair):
    """llama.cpp's "smollm" pre-tokenizer and SmolLM2's own tokenizer.json cut every
    digit out first, so "a  1" is "a", "  ", "1". transformers' GGUF loading leaves that
    step out ("a", " ", " ", "1"); we follow the model's own tokenizer."""
    ours, hf = smollm2_pair
    reference = with_smollm_pre_tokenizer(hf)
    for text in WHITESPACE_BEFORE_DIGITS + MODEL_TEXTS:
        assert ours.encode(text, allowed_special="all") == reference.encode(text), text
    assert ours.decode(ours.encode("a  1")) == "a  1" and len(ours.encode("a  1")) == 3


def test_smollm2_cold_encode_of_a_long_text_equals_its_tokenizer(smollm2_pair, monkeypatch):
    """Thousands of new chunks at once go through the NumPy merger (merge_batch.py), which
    must also leave out the bytes SmolLM2's vocabulary lacks, as the one-at-a-time merge does."""
    ours, hf = smollm2_pair
    monkeypatch.setattr(bpe, "MERGER_BYTES_PER_TOKEN", 0)  # use the merger from the first call
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    lacked = "".join(chr(byte) for byte in (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D))  # bytes without a token
    text = "\n".join([(stdlib / "difflib.py").read_text(encoding="utf-8")[:60_000], *random_texts(400, seed=7),
                      *(f"w{index}{lacked[index % 6]}x {lacked[:index % 7]}" for index in range(300))])
    assert ours.encode_ordinary(text) == with_smollm_pre_tokenizer(hf).encode(text)
    assert ours._merger is not None


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_smollm2_chat_template_equals_transformers(smollm2_pair, add_generation_prompt):
    ours, hf = smollm2_pair
    assert ours.chat_template == hf.chat_template
    for messages in CONVERSATIONS:
        expected_text = hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
        expected_ids = hf_chat_ids(hf, messages, add_generation_prompt)
        assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False) == expected_text
        assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected_ids
    prompt = ours.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "You are a helpful AI assistant named SmolLM" in prompt
