"""Which input tokens drove a prediction: gradient attributions on the input embeddings.

    from minilm import interpret
    a = interpret.integrated_gradients(classifier, tokenizer, "a wonderful, moving film")
    print(a.to_ansi())            # the text on red (pushes the output up) / blue (down)
    a.save("saliency.svg")
    a.scores                      # one number per token

The explained output F is a scalar: for a BertForSequenceClassification, the logit of the
target class; for a GPT, the log-probability of the target next token after the text.
Targets default to what the model predicts.

Both methods differentiate F with respect to the word vectors x [T, C] (the embedding
layer's output, fed back in through the models' `inputs_embeds=` argument, so it can be a
leaf of the graph):

- gradient x input:  a = x * dF/dx. A first-order (Taylor) estimate of each token's
  contribution; cheap (one backward) but blind to saturation.
- integrated gradients (Sundararajan et al., 2017): a = (x - x0) * integral over t in
  [0, 1] of dF/dx at x0 + t (x - x0), with a baseline x0 (zero vectors: "no words").
  Its defining property, completeness, is that the attributions add up exactly to
  F(x) - F(x0). The integral is computed with Gauss-Legendre quadrature, which for a
  smooth F is far more accurate per step than the usual Riemann sum; `completeness_gap`
  tells how far from exact a result is.

A token's score is the sum of its attributions over the embedding dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import viz
from .autograd import Tensor, no_grad


@dataclass
class Attribution:
    """Per-token attributions of one scalar output of a model for one text."""

    method: str  # "gradient_x_input" | "integrated_gradients"
    tokens: list[str]
    attributions: np.ndarray  # [T, C]: per token and embedding dimension
    target: int  # the class (classifier) or next-token id (language model) explained
    target_name: str
    output: float  # F(x)
    baseline_output: float | None = None  # F(x0), integrated gradients only

    @property
    def scores(self) -> np.ndarray:
        """One attribution per token [T]: its attributions summed over the embedding."""
        return self.attributions.sum(axis=-1)

    @property
    def completeness_gap(self) -> float:
        """sum(attributions) - (F(x) - F(x0)): zero for exact integrated gradients."""
        if self.baseline_output is None:
            raise ValueError("completeness is a property of integrated gradients; this is gradient x input")
        return float(self.attributions.sum()) - (self.output - self.baseline_output)

    def to_ansi(self) -> str:
        """The text in the terminal, each token on a red (positive) or blue (negative) background."""
        header = f"{self.method} for {self.target_name!r} (output {self.output:.4f})"
        return header + "\n" + viz.ansi_colored(_spaced(self.tokens), self.scores)

    def table(self) -> str:
        width = max(len(viz.display_token(t)) for t in self.tokens)
        lines = [f"{'token'.ljust(width)}  score"]
        lines += [f"{viz.display_token(t).ljust(width)}  {s:+.4f}" for t, s in zip(self.tokens, self.scores)]
        return "\n".join(lines)

    def save(self, path):
        """The coloured text as an image (.svg by hand, .png with matplotlib); returns the path."""
        title = f"{self.method}: {self.target_name!r} (output {self.output:.3f})"
        return viz.save_colored_tokens(_spaced(self.tokens), self.scores, path, title=title)


def gradient_x_input(model, tokenizer, text: str, target: int | None = None) -> Attribution:
    """x * dF/dx per token for `text` (see the module docstring)."""
    explained = _Explained(model, tokenizer, text, target)
    x = explained.embeddings  # [T, C]
    gradient, output = explained.gradients(x[None])
    return Attribution("gradient_x_input", explained.tokens, x * gradient[0], explained.target,
                       explained.target_name, float(output[0]))


def integrated_gradients(model, tokenizer, text: str, target: int | None = None, steps: int = 32,
                         baseline: np.ndarray | None = None, batch_size: int = 16) -> Attribution:
    """Integrated gradients from `baseline` (default: zero vectors) to the text's embeddings.

    steps: quadrature nodes along the straight path; batch_size: how many points of the
    path go through the model at once.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    explained = _Explained(model, tokenizer, text, target)
    x = explained.embeddings  # [T, C]
    x0 = np.zeros_like(x) if baseline is None else np.asarray(baseline, dtype=x.dtype)
    if x0.shape != x.shape:
        raise ValueError(f"baseline has shape {x0.shape}, expected the embeddings' shape {x.shape}")
    # Gauss-Legendre nodes and weights on [-1, 1], moved to [0, 1].
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (nodes + 1) / 2, weights / 2
    average_gradient = np.zeros(x.shape, dtype=np.float64)
    for start in range(0, steps, batch_size):
        alpha = alphas[start:start + batch_size, None, None]  # [S, 1, 1]
        points = (x0 + alpha * (x - x0)).astype(x.dtype)  # [S, T, C] on the path
        gradient, _ = explained.gradients(points)
        average_gradient += np.tensordot(weights[start:start + batch_size], gradient, axes=1)
    ends = explained.outputs(np.stack([x, x0]).astype(x.dtype))  # F(x), F(x0)
    return Attribution("integrated_gradients", explained.tokens, (x - x0) * average_gradient, explained.target,
                       explained.target_name, float(ends[0]), float(ends[1]))


class _Explained:
    """One text and one model output F: computes F and dF/d(word vectors) for a batch of
    word-vector sequences [S, T, C]."""

    def __init__(self, model, tokenizer, text: str, target: int | None):
        from .models import GPT, BertForSequenceClassification

        if not isinstance(model, (GPT, BertForSequenceClassification)):
            raise TypeError(f"attributions support GPT and BertForSequenceClassification models, "
                            f"got {type(model).__name__}")
        self.model, self.is_classifier = model, isinstance(model, BertForSequenceClassification)
        ids, self.tokens = viz.encode_text(tokenizer, text)
        self.ids = ids[None]  # [1, T]
        embedding = model.bert.embeddings.word if self.is_classifier else model.wte
        with no_grad():
            self.embeddings = embedding(self.ids).numpy()[0]  # [T, C]
        self.device = embedding.weight.device  # points live on the host; the model may not
        with no_grad():
            scores = self._head(Tensor(self.embeddings[None], device=self.device)).numpy()[0]  # [K]
        classes = scores.shape[-1]
        target = int(np.argmax(scores)) if target is None else target
        if not 0 <= target < classes:
            raise ValueError(f"target {target} is out of range for {classes} outputs")
        self.target = target
        if self.is_classifier:
            self.target_name = model.config.id2label.get(target, f"class {target}")
        else:
            self.target_name = "next token " + tokenizer.decode([target])

    def _head(self, embeds: Tensor) -> Tensor:
        """The model's scores for all targets [S, K], in eval mode (no dropout)."""
        with viz.eval_mode(self.model):
            if self.is_classifier:
                return self.model(inputs_embeds=embeds).logits  # [S, num_labels]
            logits = self.model(inputs_embeds=embeds).logits[:, -1]  # [S, V] at the last position
            return F.log_softmax(logits, axis=-1)  # [S, V] log-probabilities

    def outputs(self, points: np.ndarray) -> np.ndarray:
        with no_grad():
            return self._head(Tensor(points, device=self.device))[:, self.target].numpy().astype(np.float64)  # [S]

    def gradients(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dF/dx at each of the points [S, T, C], and F there [S]."""
        embeds = Tensor(points, requires_grad=True, device=self.device)
        # The parameters are switched off meanwhile: backward then computes only what
        # attribution needs and leaves the parameters' .grad untouched.
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        for p in parameters:
            p.requires_grad_(False)
        try:
            output = self._head(embeds)[:, self.target]  # [S]
            output.sum().backward()  # the rows are independent: each gets its own gradient
        finally:
            for p in parameters:
                p.requires_grad_(True)
        return embeds.grad.numpy().astype(np.float64), output.numpy().astype(np.float64)


def _spaced(tokens: list[str]) -> list[str]:
    """WordPiece tokens rejoined as text: a space before each word, none before '##' pieces."""
    if not any(t.startswith("##") or t in ("[CLS]", "[SEP]") for t in tokens):
        return list(tokens)  # byte-level BPE and characters carry their own spaces
    return [t[2:] if t.startswith("##") else (" " + t if i else t) for i, t in enumerate(tokens)]
