"""03 - Word embeddings: a vector per word, learned from the company the word keeps.

    python examples/learn/03_embeddings.py [--out learn_out] [--steps 1500]

An embedding layer is a table with one learned vector per word (`nn.Embedding`: row i is
word i's vector). Nothing tells the model what words mean; it only learns to predict a
word from its neighbours (CBOW, Mikolov et al. 2013): the mean of the context vectors goes
through a linear layer to scores over the vocabulary. Words used in the same contexts get
pushed towards similar vectors, so after training, cosine similarity between rows finds
related words ("distributional semantics").

Printed: the nearest neighbours of a few words before and after training. Picture: the
cosine similarities between those words as a heatmap.
"""

import argparse
import re
from collections import Counter
from pathlib import Path

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm import nn, optim, viz
from minilm.cli import builtin_text

PROBES = ["list", "dict", "tuple", "int", "float", "string", "if", "while", "for", "return", "class", "function",
          "true", "false", "error", "exception"]


class CBOW(nn.Module):
    """context word ids [B, 2W] -> scores for the middle word [B, V]."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        # Small starting vectors (word2vec's choice): the learned part then dominates them.
        nn.init.uniform_(self.embedding.weight, -0.5 / dim, 0.5 / dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, context):
        return self.out(self.embedding(context).mean(axis=1))  # [B, 2W, D] -> [B, D] -> [B, V]


def nearest(vectors: np.ndarray, words: list[str], index: dict, word: str, k: int = 5) -> list[str]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit[index[word]]
    return [words[i] for i in np.argsort(-similarity)[1:k + 1]]  # [0] is the word itself


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--vocab", type=int, default=1000, help="keep the most frequent words")
    parser.add_argument("--dim", type=int, default=48)
    parser.add_argument("--window", type=int, default=2, help="context words on each side")
    args = parser.parse_args(argv)
    out = Path(args.out)

    words_in_text = re.findall(r"[a-z]+", builtin_text().lower())
    words = [w for w, _ in Counter(words_in_text).most_common(args.vocab)]
    index = {w: i for i, w in enumerate(words)}
    ids = np.array([index[w] for w in words_in_text if w in index])
    probes = [w for w in PROBES if w in index]
    print(f"{len(words_in_text):,} words in the docs, {len(ids):,} of them among the {len(words)} most frequent")

    w = args.window
    offsets = np.concatenate([np.arange(-w, 0), np.arange(1, w + 1)])  # the context around position i
    rng = np.random.default_rng(0)
    ml.manual_seed(0)
    model = CBOW(len(words), args.dim)
    before = model.embedding.weight.numpy().copy()
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(args.steps):
        centre = rng.integers(w, len(ids) - w, size=256)  # [B]
        loss = F.cross_entropy(model(ids[centre[:, None] + offsets]), ids[centre])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}")

    after = model.embedding.weight.numpy()
    print(f"\n{'word':<10} {'nearest before training (random vectors)':<44} nearest after training")
    for word in probes:
        print(f"{word:<10} {', '.join(nearest(before, words, index, word, 4)):<44} "
              f"{', '.join(nearest(after, words, index, word, 4))}")

    unit = after[[index[p] for p in probes]]
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    picture = viz.save_heatmap(unit @ unit.T, probes, probes, out / "03_embedding_similarity.svg",
                               title="cosine similarity of learned word vectors", diverging=True, vmax=1.0)
    print(f"\npicture: {picture}")
    return {word: nearest(after, words, index, word) for word in probes}


if __name__ == "__main__":
    main()
