"""Token files, batch sampling, the masked-LM collator and labeled-text files."""

import json

import numpy as np
import pytest

from minilm.data import (
    DataError,
    MaskedLMCollator,
    RandomWindowSampler,
    read_labeled_texts,
    read_token_file,
    sequential_windows,
    train_val_split,
    write_token_file,
)


@pytest.mark.parametrize("vocab", [300, 70000])
def test_token_file_round_trip_with_the_smallest_dtype(tmp_path, vocab):
    ids = np.random.default_rng(0).integers(0, vocab, 1000)
    write_token_file(tmp_path / "t.bin", ids, vocab)
    back = read_token_file(tmp_path / "t.bin")
    assert back.dtype.itemsize == (2 if vocab <= 65536 else 4)
    np.testing.assert_array_equal(back, ids)


def test_truncated_token_file_is_named(tmp_path):
    write_token_file(tmp_path / "t.bin", np.arange(100), 300)
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:-3])
    with pytest.raises(DataError, match="t.bin: truncated"):
        read_token_file(tmp_path / "t.bin")


def test_windows_are_shifted_by_one_and_resume_identically():
    tokens = np.arange(1000)
    sampler = RandomWindowSampler(tokens, block_size=8, batch_size=4, seed=3)
    x, y = sampler.next_batch()
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(y, x + 1)
    state = sampler.state_dict()
    after = sampler.next_batch()
    sampler.load_state_dict(state)
    np.testing.assert_array_equal(sampler.next_batch()[0], after[0])


def test_sequential_windows_cover_the_tokens_once():
    tokens = np.arange(101)
    rows = [x for x, _ in sequential_windows(tokens, 10, 3)]
    np.testing.assert_array_equal(np.concatenate(rows).reshape(-1), np.arange(100))


def test_masked_lm_collator_proportions():
    special = [0, 1, 2]  # e.g. [PAD], [CLS], [SEP]
    mask_id, vocab = 3, 1000
    rng = np.random.default_rng(1)
    ids = rng.integers(4, vocab, size=(400, 128))
    ids[:, 0], ids[:, -1], ids[:, 100:-1] = 1, 2, 0  # [CLS] ... [SEP] with padding
    collator = MaskedLMCollator(mask_id, vocab, special, probability=0.15, seed=0)
    masked, labels = collator(ids)
    chosen = labels != -100
    maskable = ~np.isin(ids, special)
    n = chosen.sum()
    # 15% of maskable tokens, within 4 standard deviations of a binomial count
    p, m = 0.15, maskable.sum()
    assert abs(n - p * m) < 4 * np.sqrt(m * p * (1 - p))
    assert not chosen[~maskable].any(), "special or padding tokens were chosen"
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    became_mask = (masked[chosen] == mask_id).mean()
    unchanged = (masked[chosen] == ids[chosen]).mean()
    assert abs(became_mask - 0.8) < 4 * np.sqrt(0.8 * 0.2 / n)
    # kept: 10% plus the random replacements that happened to draw the same token
    assert abs(unchanged - 0.1) < 4 * np.sqrt(0.1 * 0.9 / n) + 0.001
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])


def test_labeled_texts_from_csv_and_jsonl(tmp_path):
    (tmp_path / "d.csv").write_text('text,label\n"good, very",pos\nbad,neg\n', encoding="utf-8")
    data = read_labeled_texts(tmp_path / "d.csv")
    assert data.texts == ["good, very", "bad"] and data.label_names == ["neg", "pos"] and data.labels == [1, 0]
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a", "label": 1}) + "\n{bad json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d.jsonl, line 2"):
        read_labeled_texts(tmp_path / "d.jsonl")


def test_train_val_split_is_a_partition():
    train, val = train_val_split(10, 0.2, seed=0)
    assert len(val) == 2 and sorted(np.concatenate([train, val])) == list(range(10))
