"""Seq2SeqTask with the Trainer: exact resume, the validation metrics, decoding outputs."""

import numpy as np
import pytest

import minilm as ml
from minilm.metrics import corpus_bleu, corpus_rouge_l
from minilm.models import Transformer, TransformerConfig
from minilm.seq2seq_data import special_ids, train_joint_bpe
from minilm.train import Seq2SeqTask, Trainer, TrainingConfig
from minilm.train.seq2seq import output_tokens, translate

WORDS = {"the": "le", "cat": "chat", "dog": "chien", "red": "rouge", "big": "grand", "sees": "voit"}


def _pairs(count, seed):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        words = list(rng.choice(list(WORDS), size=rng.integers(2, 5)))
        pairs.append((" ".join(words), " ".join(WORDS[w] for w in words)))
    return pairs


@pytest.fixture(scope="module")
def data():
    train, val = _pairs(40, 0), _pairs(8, 1)
    return train, val, train_joint_bpe(train, 290)


def _setup(data, out_dir, **overrides):
    train, val, tokenizer = data
    ml.manual_seed(0)
    ids = special_ids(tokenizer)
    model = Transformer(TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=16, encoder_layers=1,
                                          decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                                          encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                                          dropout=0.1, pad_token_id=ids["pad"], bos_token_id=ids["bos"],
                                          eos_token_id=ids["eos"], decoder_start_token_id=ids["bos"]))
    task = Seq2SeqTask(train, val, tokenizer, batch_size=4, max_source_len=24, max_target_len=10,
                       label_smoothing=0.1, generate_examples=4, seed=0)
    config = TrainingConfig(max_steps=8, batch_size=4, lr=1e-2, warmup_steps=2, log_interval=1, eval_interval=4,
                            checkpoint_interval=4, eval_batches=2, **overrides)
    return Trainer(model, task, config, out_dir=out_dir, quiet=True)


def test_resuming_gives_bit_identical_losses_and_scores(data, tmp_path):
    uninterrupted = _setup(data, tmp_path / "a").fit()
    first = _setup(data, tmp_path / "b")
    first.fit(stop_at_step=4)
    resumed = _setup(data, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / "checkpoint")
    history = resumed.fit()
    evaluations = [r for r in history if "val_loss" in r]
    assert evaluations and {"val_bleu", "val_rouge_l"} <= set(evaluations[-1])
    if ml.default_device().name == "cpu":
        def exact(records):  # everything but the speed
            return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records if r["step"] > 4]

        assert exact(history) == exact(uninterrupted)
    else:
        got = [r["loss"] for r in history if "loss" in r and r["step"] > 4]
        np.testing.assert_allclose(got, [r["loss"] for r in uninterrupted if "loss" in r and r["step"] > 4], rtol=1e-5)


def test_evaluation_is_the_token_weighted_loss_and_the_scores_of_greedy_outputs(data, tmp_path):
    trainer = _setup(data, None)
    trainer.fit()
    metrics = trainer.evaluate()
    task, model = trainer.task, trainer.model.eval()  # (evaluate leaves the model in training mode)
    # The loss summed over every validation target token, one pair at a time, divided by the token count.
    total = count = 0.0
    for pair in task.val:
        batch = task._batch([pair])
        n = int((batch["labels"] != -100).sum())
        with ml.no_grad():
            total += float(model(batch["src_ids"], batch["tgt_ids"], labels=batch["labels"]).loss.item()) * n
        count += n
    assert metrics["val_loss"] == pytest.approx(total / count, rel=1e-5)
    _, val, tokenizer = data
    outputs = translate(model, tokenizer, [s for s, _ in val[:4]], max_source_len=24, max_new_tokens=10)
    references = [t for _, t in val[:4]]
    assert metrics["val_bleu"] == pytest.approx(corpus_bleu(outputs, [references]).score)
    assert metrics["val_rouge_l"] == pytest.approx(100 * corpus_rouge_l(outputs, references).fmeasure)


def test_translate_batches_by_length_but_answers_in_order(data):
    trainer = _setup(data, None)
    trainer.fit()
    _, val, tokenizer = data
    sources = [s for s, _ in val]
    together = translate(trainer.model, tokenizer, sources, max_source_len=24, max_new_tokens=6, num_beams=2,
                         batch_size=3)
    alone = [translate(trainer.model, tokenizer, [s], max_source_len=24, max_new_tokens=6, num_beams=2)[0]
             for s in sources]
    assert together == alone


def test_output_tokens_cut_at_the_end_token():
    ids = {"bos": 0, "pad": 1, "eos": 2}
    assert output_tokens([0, 5, 6, 2, 1, 1], ids) == [5, 6]
    assert output_tokens([0, 5, 6, 7], ids) == [5, 6, 7]  # ran out of length without </s>
    assert output_tokens([0, 2], ids) == []


def test_task_needs_both_splits(data):
    train, _, tokenizer = data
    with pytest.raises(ValueError, match="need training and validation pairs, got 40 and 0"):
        Seq2SeqTask(train, [], tokenizer, batch_size=4)
