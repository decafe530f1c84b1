"""minilm.interpret: gradient attributions, and the inputs_embeds / output_attentions paths."""

import numpy as np
import pytest

import minilm as ml
from minilm import interpret, nn
from minilm.autograd import no_grad
from minilm.models import GPT, BertConfig, BertForSequenceClassification, BertModel, GPTConfig
from minilm.tokenizers import CharTokenizer

TEXT = "the cat sat on the mat"


class _CharsForBert:
    """A character tokenizer that frames the text as BERT expects: [CLS] ... [SEP]."""

    def __init__(self):
        self.chars = CharTokenizer.from_text(TEXT + "dogrun")
        self.cls, self.sep = self.chars.vocab_size, self.chars.vocab_size + 1
        self.vocab_size = self.chars.vocab_size + 2

    def encode(self, text):
        return [self.cls] + self.chars.encode(text) + [self.sep]

    def decode(self, ids):
        return "".join("[CLS]" if i == self.cls else "[SEP]" if i == self.sep else self.chars.decode([i]) for i in ids)


def _classifier(dtype=ml.float64):
    tokenizer = _CharsForBert()
    ml.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    return BertForSequenceClassification(config).to(dtype=dtype), tokenizer


def _gpt(dtype=ml.float64):
    tokenizer = CharTokenizer.from_text(TEXT)
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=32, dropout=0.1))
    return model.to(dtype=dtype), tokenizer


def _model_output(model, tokenizer, target):
    """(the explained output F for `target`, the predicted target): a classifier's logit, or
    a GPT's log-probability of the next token after the text; in eval mode."""
    model.eval()
    try:
        with no_grad():
            out = model(np.array([tokenizer.encode(TEXT)]))
    finally:
        model.train()
    logits = getattr(out, "logits", out).numpy().astype(np.float64)
    if isinstance(model, BertForSequenceClassification):
        scores = logits[0]  # [num_labels]
    else:
        last = logits[0, -1]  # [V] next-token logits after the text
        scores = last - last.max() - np.log(np.exp(last - last.max()).sum())
    return scores[target], int(np.argmax(scores))


@pytest.mark.parametrize("make", [_classifier, _gpt], ids=["bert-classifier", "gpt"])
def test_integrated_gradients_are_complete(make):
    model, tokenizer = make()
    for target in (None, 1):
        result = interpret.integrated_gradients(model, tokenizer, TEXT, target=target, steps=24, batch_size=7)
        difference = result.output - result.baseline_output
        # a real test: the output moves along the path (4e-4 seen with CuPy-drawn weights)
        assert abs(difference) > 1e-4
        assert abs(result.completeness_gap) <= 0.01 * abs(difference), (result.completeness_gap, difference)
        # F(x) is the model's own output for the text, run the ordinary way (token ids)
        output, predicted = _model_output(model, tokenizer, result.target)
        assert result.output == pytest.approx(output, rel=1e-9, abs=1e-12)
        if target is None:  # the default target is what the model predicts
            assert result.target == predicted


def test_completeness_holds_in_float32_too():
    model, tokenizer = _classifier(ml.float32)
    result = interpret.integrated_gradients(model, tokenizer, TEXT, target=2)
    assert abs(result.completeness_gap) <= 0.01 * abs(result.output - result.baseline_output)


def test_gradient_x_input_is_the_first_order_term():
    """F(x) - F(x - eps * x) ~ eps * sum(x * dF/dx): the directional derivative along x."""
    model, tokenizer = _gpt()
    result = interpret.gradient_x_input(model, tokenizer, "the ca", target=4)
    ids = np.array([tokenizer.encode("the ca")])
    with no_grad():
        x = model.wte(ids).numpy()

        def f(scale):
            logits = model.eval()(inputs_embeds=ml.tensor(x * scale)).logits[:, -1]
            return float(ml.functional.log_softmax(logits, axis=-1)[0, 4].item())

        eps = 1e-5
        directional = (f(1 + eps) - f(1 - eps)) / (2 * eps)
    assert result.attributions.sum() == pytest.approx(directional, rel=1e-5)
    assert result.output == pytest.approx(f(1.0))
    assert result.target_name == "next token " + tokenizer.decode([4])
    with pytest.raises(ValueError, match="integrated gradients"):
        _ = result.completeness_gap


def test_attribution_leaves_the_model_as_it_was():
    model, tokenizer = _classifier()
    model.train()
    interpret.integrated_gradients(model, tokenizer, TEXT, steps=4)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_default_target_is_the_prediction_and_the_outputs_render(tmp_path):
    model, tokenizer = _classifier()
    result = interpret.gradient_x_input(model, tokenizer, TEXT)
    with no_grad():
        logits = model.eval()(np.array([tokenizer.encode(TEXT)])).logits.numpy()[0]
    assert result.target == int(np.argmax(logits)) and result.target_name in ("a", "b", "c")
    assert len(result.tokens) == len(TEXT) + 2 and result.attributions.shape == (len(TEXT) + 2, 16)
    ansi = result.to_ansi()
    assert "\x1b[48;2;" in ansi and "[CLS]" in ansi
    assert "score" in result.table()
    for name in ("saliency.svg", "saliency.png"):
        assert result.save(tmp_path / name).stat().st_size > 500


def test_bad_arguments_are_clear_errors():
    model, tokenizer = _gpt()
    with pytest.raises(TypeError, match="GPT and BertForSequenceClassification"):
        interpret.gradient_x_input(nn.Linear(2, 2), tokenizer, TEXT)
    with pytest.raises(ValueError, match="out of range"):
        interpret.gradient_x_input(model, tokenizer, TEXT, target=10_000)
    with pytest.raises(ValueError, match="baseline has shape"):
        interpret.integrated_gradients(model, tokenizer, TEXT, baseline=np.zeros((2, 2)))


def test_inputs_embeds_give_the_same_outputs_as_ids():
    gpt, tokenizer = _gpt()
    gpt_ids = np.array([tokenizer.encode(TEXT)])
    with no_grad():
        gpt.eval()
        from_embeddings = gpt(inputs_embeds=gpt.wte(gpt_ids)).logits.numpy()
        np.testing.assert_allclose(from_embeddings, gpt(gpt_ids).logits.numpy(), rtol=1e-12)
    classifier, chars = _classifier()
    bert = classifier.eval().bert
    ids = np.array([chars.encode(TEXT)])
    with no_grad():
        np.testing.assert_allclose(bert(inputs_embeds=bert.embeddings.word(ids)).numpy(), bert(ids).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="exactly one"):
        gpt(gpt_ids, inputs_embeds=gpt.wte(gpt_ids))
    with pytest.raises(ValueError, match="exactly one"):
        bert()


def test_output_attentions_extend_the_results_and_change_nothing_else():
    gpt, tokenizer = _gpt()
    gpt.eval()
    ids = np.array([tokenizer.encode(TEXT)])
    with no_grad():
        logits, loss, attentions = gpt(ids, targets=ids, output_attentions=True)
        plain_logits, plain_loss = gpt(ids, targets=ids)
    np.testing.assert_array_equal(logits.numpy(), plain_logits.numpy())
    assert loss.item() == plain_loss.item()
    assert len(attentions) == 2 and attentions[0].shape == (1, 2, len(TEXT), len(TEXT))

    classifier, chars = _classifier()
    ids = np.array([chars.encode(TEXT)] * 2)
    with no_grad():
        hidden, pooled, attentions = classifier.eval().bert(ids, return_pooled=True, output_attentions=True)
    assert isinstance(classifier.bert, BertModel) and pooled.shape == (2, 16)
    assert [a.shape for a in attentions] == [(2, 2, ids.shape[1], ids.shape[1])] * 2
