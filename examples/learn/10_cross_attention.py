"""10 - Cross-attention: which source tokens each target token looks at.

    python examples/learn/10_cross_attention.py [--out learn_out] [--steps 400]

An encoder-decoder Transformer (minilm.models.Transformer) reads the whole source once with
its encoder, then writes the target one token at a time with its decoder. Each decoder layer
has, between its causal self-attention and its feed-forward, a *cross-attention*: the decoder
position asks a query, and the keys and values are the encoder's outputs, one per source
token. Its weights [target positions, source positions] say where in the source each output
token is looking:

    weights = softmax(Q_decoder K_encoder^T / sqrt(d))   [T, S], each row sums to 1

The script trains a small Transformer on a toy translation that needs it: digits to English
words ("3 1 4" -> "three one four"). To write the i-th word the decoder must find the i-th
digit, so a head that has learned the task puts its weight on the diagonal: the map is an
alignment between the two sentences, learned from the loss alone (nobody told the model
which digit each word belongs to). The script prints, for each (layer, head), how often a target word's
largest weight falls on the digit it spells (chance is about 1/length), and draws the best
head's map and each layer's mean over heads.
"""

import argparse
from pathlib import Path

import numpy as np

import minilm as ml
from minilm import viz
from minilm.models import Transformer, TransformerConfig
from minilm.train import Trainer, TrainingConfig

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPECIALS = ["<s>", "<pad>", "</s>"]
VOCAB = SPECIALS + [str(d) for d in range(10)] + NAMES  # one small word-level vocabulary for both sides
ID = {token: i for i, token in enumerate(VOCAB)}
BOS, PAD, EOS = ID["<s>"], ID["<pad>"], ID["</s>"]


def make_pairs(rng, count: int, shortest: int, longest: int):
    """(source ids, target ids): digits and their names, e.g. 3 1 4 -> three one four."""
    pairs = []
    for _ in range(count):
        digits = rng.integers(0, 10, size=rng.integers(shortest, longest + 1))
        pairs.append(([ID[str(d)] for d in digits] + [EOS], [ID[NAMES[d]] for d in digits]))
    return pairs


def batch_of(pairs) -> dict:
    from minilm.seq2seq_data import collate

    return collate([s for s, _ in pairs], [t for _, t in pairs], {"bos": BOS, "pad": PAD, "eos": EOS})


class ToyTask:
    """The Trainer's view of the toy data: fresh random pairs every step."""

    metric = "val_loss"

    def __init__(self, batch_size: int, shortest: int, longest: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.batch_size, self.shortest, self.longest = batch_size, shortest, longest
        self.val = batch_of(make_pairs(np.random.default_rng(seed + 1), 64, shortest, longest))

    def next_batch(self) -> dict:
        return batch_of(make_pairs(self.rng, self.batch_size, self.shortest, self.longest))

    @staticmethod
    def loss(model, batch):
        return model(batch["src_ids"], batch["tgt_ids"], src_attention_mask=batch["src_attention_mask"],
                     tgt_attention_mask=batch["tgt_attention_mask"], labels=batch["labels"]).loss

    def evaluate(self, model, max_batches: int) -> dict:
        return {"val_loss": float(self.loss(model, self.val).item())}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def alignment_accuracy(weights: np.ndarray, lengths) -> float:
    """How often row i's largest weight (the decoder input that predicts word i) falls on the
    digit word i spells (source position i). weights [B, T, S]; lengths: digits per row."""
    hits = total = 0
    for row, n in enumerate(lengths):
        for i in range(n):
            hits += int(np.argmax(weights[row, i, : n + 1]) == i)
            total += 1
    return hits / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    parser.add_argument("--width", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers (default 2)")
    parser.add_argument("--heads", type=int, default=2, help="attention heads (default 2)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ml.manual_seed(0)
    config = TransformerConfig(vocab_size=len(VOCAB), d_model=args.width, encoder_layers=args.layers,
                               decoder_layers=args.layers, encoder_attention_heads=args.heads,
                               decoder_attention_heads=args.heads, encoder_ffn_dim=4 * args.width,
                               decoder_ffn_dim=4 * args.width, max_position_embeddings=16, dropout=0.0,
                               activation="relu", init_std=args.width ** -0.5,  # see minilm.cli.seq2seq
                               pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS)
    model = Transformer(config)
    task = ToyTask(batch_size=32, shortest=3, longest=8)
    training = TrainingConfig(max_steps=args.steps, lr=3e-3, warmup_steps=min(30, args.steps),
                              eval_interval=max(1, args.steps // 4), weight_decay=0.0)
    Trainer(model, task, training, quiet=True).fit()

    # Cross-attention weights of fresh examples: every layer's [B, H, T, S].
    test = make_pairs(np.random.default_rng(7), 64, 3, 8)
    batch = batch_of(test)
    model.eval()
    with ml.no_grad():
        result = model(batch["src_ids"], batch["tgt_ids"], src_attention_mask=batch["src_attention_mask"],
                       tgt_attention_mask=batch["tgt_attention_mask"], labels=batch["labels"],
                       output_attentions=True)
    attentions = [a.numpy() for a in result.attentions]
    lengths = [len(target) for _, target in test]
    print(f"a {args.layers}-layer Transformer, {model.num_parameters():,} parameters, trained {args.steps} steps "
          f"on digits -> words; test loss {float(result.loss.item()):.3f}")
    print("how often a target word's largest cross-attention weight falls on the digit it spells")
    print(f"(chance: about {np.mean([1 / (n + 1) for n in lengths]):.2f}):")
    accuracy = {}
    for layer, weights in enumerate(attentions):
        for head in range(weights.shape[1]):
            accuracy[layer, head] = alignment_accuracy(weights[:, head], lengths)
            print(f"  layer {layer} head {head}: {accuracy[layer, head]:.2f}")
    best_layer, best_head = max(accuracy, key=accuracy.get)
    print(f"best: layer {best_layer} head {best_head} attends to the aligned digit for "
          f"{accuracy[best_layer, best_head]:.0%} of target words")

    # One example drawn: rows are the decoder's inputs, labelled with the word each predicts.
    example = int(np.argmax(lengths))
    n = lengths[example]
    source_labels = [VOCAB[t] for t in test[example][0]]
    target_labels = [f"-> {VOCAB[t]}" for t in test[example][1]]
    best = attentions[best_layer][example, best_head, :n, : n + 1]
    print(f"\nexample: {' '.join(source_labels[:-1])} -> {' '.join(VOCAB[t] for t in test[example][1])}")
    for label, row in zip(target_labels, best):
        print(f"  {label:>9} looks at {source_labels[int(np.argmax(row))]:>4} ({row.max():.2f})")
    viz.save_heatmap(best, target_labels, source_labels, out / "10_cross_attention_best_head.svg",
                     title=f"cross-attention, layer {best_layer} head {best_head}", xlabel="source (encoder)",
                     ylabel="target (decoder)")
    for layer, weights in enumerate(attentions):
        viz.save_heatmap(weights[example, :, :n, : n + 1].mean(axis=0), target_labels, source_labels,
                         out / f"10_cross_attention_layer{layer}_mean.svg",
                         title=f"cross-attention, layer {layer}, mean over heads", xlabel="source (encoder)",
                         ylabel="target (decoder)")
    return accuracy


if __name__ == "__main__":
    main()
