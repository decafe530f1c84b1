"""One encoder-decoder training step (forward, loss, backward, AdamW), minilm vs PyTorch.

The peer is transformers' MarianMTModel (PyTorch) holding the very same model: minilm's
Transformer is built, saved with save_pretrained and loaded into transformers, so both sides
run identical configurations and weights (default: 3 + 3 post-LN layers, 256 wide, 4 heads,
feed-forward 1024, vocabulary 8000, sources and targets of 64 tokens with some source
padding, batch 16, dropout 0.1, label smoothing 0.1). Both are timed alternately in one
process; the ratio minilm / torch is printed beside the machine (below 1.0: minilm is faster).

    python benchmarks/seq2seq_step.py [--steps 5] [--rounds 3] [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path
from train_step import add_threads_argument, compare_steps, start_torch

import minilm as ml
from minilm import optim
from minilm.models import Transformer, TransformerConfig


def make_batch(config: TransformerConfig, batch: int, length: int, seed: int = 0):
    """Sources with their padding mask (a quarter of the rows padded to half length),
    decoder inputs and labels (the inputs shifted left, eos last)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(3, config.vocab_size, (batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[: batch // 4, length // 2:] = 0
    src[mask == 0] = config.pad_token_id
    tgt = rng.integers(3, config.vocab_size, (batch, length))
    tgt[:, 0] = config.decoder_start_token_id
    labels = np.concatenate([tgt[:, 1:], np.full((batch, 1), config.eos_token_id)], axis=1)
    return src, mask, tgt, labels


def minilm_step(model: Transformer, data, smoothing: float):
    opt = optim.AdamW(optim.param_groups_no_decay(model, 0.01), lr=3e-4, flat=True)  # as the Trainer
    src, mask, tgt, labels = data
    model.train()

    def step():
        loss = model(src, tgt, src_attention_mask=mask, labels=labels, label_smoothing=smoothing).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return step


def torch_step(torch, folder, data, smoothing: float):
    import transformers

    model = transformers.MarianMTModel.from_pretrained(folder).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "shared" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "shared" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, foreach=True)
    src, mask, tgt, labels = (torch.tensor(a) for a in data)
    loss_function = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)

    def step():
        logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        loss = loss_function(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def model_flops(c: TransformerConfig, batch: int, length: int) -> float:
    """6 x parameters-in-matmuls x tokens, plus attention scores/values (x3 for the backward)."""
    encoder = c.encoder_layers * (4 * c.d_model**2 + 2 * c.d_model * c.encoder_ffn_dim)
    decoder = c.decoder_layers * (8 * c.d_model**2 + 2 * c.d_model * c.decoder_ffn_dim)
    tokens = batch * length
    weights = 6 * (encoder + decoder + c.vocab_size * c.d_model) * tokens
    attention = 3 * 2 * 2 * batch * length**2 * c.d_model * (c.encoder_layers + 2 * c.decoder_layers)
    return weights + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=3, help="encoder layers, and as many decoder layers")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--length", type=int, default=64, help="source and target tokens")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best median counts")
    parser.add_argument("--profile", action="store_true", help="print minilm's cProfile top entries")
    add_threads_argument(parser)
    args = parser.parse_args()
    torch = start_torch(args.threads)

    config = TransformerConfig.marian(
        vocab_size=args.vocab, d_model=args.width, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn,
        decoder_ffn_dim=args.ffn, max_position_embeddings=max(args.length, 64), dropout=args.dropout,
        pad_token_id=args.vocab - 1, eos_token_id=0)
    ml.manual_seed(0)
    model = Transformer(config)
    data = make_batch(config, args.batch, args.length)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)  # the peer loads exactly this model
        theirs = torch_step(torch, folder, data, args.label_smoothing)
    ours = minilm_step(model, data, args.label_smoothing)
    flops = model_flops(config, args.batch, args.length)
    print(f"Encoder-decoder training step: {args.layers}+{args.layers} layers, {args.width} wide, {args.heads} heads, "
          f"ffn {args.ffn}, S=T={args.length}, B={args.batch}, vocab {args.vocab}, dropout {args.dropout}, "
          f"label smoothing {args.label_smoothing} ({flops / 1e9:.1f} GFLOP a step)")
    print(describe_machine(torch_line(torch)))
    compare_steps(ours, theirs, flops, args.steps, args.rounds, args.profile, peer="torch (transformers Marian)")


if __name__ == "__main__":
    main()
