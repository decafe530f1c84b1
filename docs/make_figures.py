"""Regenerate the figures of docs/README.md.

    python docs/make_figures.py        # writes docs/transformer_block_graph.dot and .svg

The .svg needs Graphviz's `dot` program (apt-get install graphviz / brew install graphviz);
without it only the .dot text is written.
"""

from pathlib import Path

import minilm as ml
from minilm import nn, viz

HERE = Path(__file__).resolve().parent


def transformer_block_graph() -> viz.Graph:
    """One pre-LN (GPT-2) Transformer block on a batch [2, 8, 32], with a toy loss."""
    ml.manual_seed(0)
    block = nn.TransformerBlock(d_model=32, n_head=4, causal=True, activation="gelu_tanh")
    x = ml.randn(2, 8, 32, requires_grad=True)
    x.name = "x (the residual stream)"
    loss = (block(x) ** 2).mean()
    loss.name = "loss"
    graph = viz.graph(loss, show_grad=True, params=dict(block.named_parameters()))
    loss.backward()
    return graph


def main():
    graph = transformer_block_graph()
    print("wrote", graph.save(HERE / "transformer_block_graph.dot"))
    print("wrote", graph.save(HERE / "transformer_block_graph.svg"))


if __name__ == "__main__":
    main()
