"""Attention maps: the attention weights a GPT or BERT model computes for a text.

    weights, tokens = viz.attention_map(model, tokenizer, "The cat sat.", layer=0, head=3)
    viz.save_attention_heatmap(weights, tokens, "attention.svg")

The only part of `minilm.viz` that knows about models (imported when first needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..nn.utils import eval_mode
from .plots import save_heatmap


def encode_text(tokenizer, text: str) -> tuple[np.ndarray, list[str]]:
    """Token ids [T] and the readable token strings of `text`.

    WordPiece adds [CLS] ... [SEP] as BERT expects; byte-level BPE tokens are shown as
    UTF-8 text (a token holding part of a character shows the replacement mark).
    """
    ids = list(tokenizer.encode(text))
    if not ids:
        raise ValueError(f"the text {text!r} encodes to no tokens")
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        tokens = list(tokenizer.convert_ids_to_tokens(ids))
    elif hasattr(tokenizer, "token_bytes"):
        tokens = [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in ids]
    else:
        tokens = [tokenizer.decode([i]) for i in ids]
    return np.array(ids, dtype=np.int64), tokens


def attention_weights(model, ids) -> np.ndarray:
    """All attention weights of a GPT or BERT model for one sequence: [layers, heads, T, T].

    Row i of a map is how query position i spreads its attention over the key positions
    (it sums to 1). Runs the model in eval mode (no dropout) without recording a graph.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # [1, T]
    encoder = _attention_model(model)
    with no_grad(), eval_mode(model):
        result = encoder(ids, output_attentions=True)  # GPT: a ModelOutput; BertModel: (hidden, attentions)
        attentions = result.attentions if hasattr(result, "attentions") else result[-1]  # layers x [1, H, T, T]
    return np.stack([a.numpy()[0] for a in attentions])


def attention_map(model, tokenizer, text: str, layer: int = 0, head: int | None = 0) -> tuple[np.ndarray, list[str]]:
    """The attention weights [T, T] of one layer and head (head=None: the mean over heads)
    for `text`, with its tokens (the labels of both axes: rows are queries, columns keys)."""
    ids, tokens = encode_text(tokenizer, text)
    weights = attention_weights(model, ids)  # [L, H, T, T]
    layers, heads = weights.shape[:2]
    if not -layers <= layer < layers:
        raise IndexError(f"layer {layer} is out of range: the model has {layers} layers")
    if head is None:
        return weights[layer].mean(axis=0), tokens
    if not -heads <= head < heads:
        raise IndexError(f"head {head} is out of range: the model has {heads} heads per layer")
    return weights[layer, head], tokens


def save_attention_heatmap(weights: np.ndarray, tokens: list[str], path, title: str = "attention") -> Path:
    """Draw an attention map [T, T] as a heatmap, queries down the side, keys along the top."""
    weights = np.asarray(weights)
    if weights.shape != (len(tokens), len(tokens)):
        raise ValueError(f"weights of shape {weights.shape} do not match {len(tokens)} tokens")
    return save_heatmap(weights, tokens, tokens, path, title=title, xlabel="key (attended to)",
                        ylabel="query (attending)", vmin=0.0)


def _attention_model(model):
    """The part of `model` that takes output_attentions: GPT, BertModel, or the BERT inside a head."""
    from ..models import GPT, BertModel

    if isinstance(model, (GPT, BertModel)):
        return model
    inner = getattr(model, "bert", None)
    if isinstance(inner, BertModel):
        return inner
    raise TypeError(f"attention maps need a GPT or BERT model, got {type(model).__name__}")
