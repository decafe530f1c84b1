"""05 - Two ways to learn from raw text: causal LM (GPT) and masked LM (BERT).

    python examples/learn/05_causal_vs_masked.py [--out learn_out] [--steps 400]

Both objectives turn unlabeled text into prediction exercises; they differ in what the
model may look at:

- causal LM: predict every token from the tokens before it. The attention is masked to
  the past (a lower-triangular map), every position is a training example, and the model
  can generate text left to right.
- masked LM: hide 15% of the tokens ([MASK]) and predict them from both sides. The
  attention sees the whole sequence (a full map), only the hidden positions give a loss,
  and the model's vectors describe each token in its full context (good for
  classification, search) but it cannot simply continue a text.

Same characters, same size of network, same number of steps; printed: what each learns
to do; pictures: the two attention maps side by side.
"""

import argparse
from pathlib import Path

import numpy as np

import minilm as ml
from minilm import viz
from minilm.cli import builtin_text
from minilm.models import GPT, BertConfig, BertForMaskedLM, GPTConfig
from minilm.tokenizers import CharTokenizer
from minilm.train import CausalLMTask, MaskedLMTask, Trainer, TrainingConfig

PROMPT = "The for statement is used to "
MASKED = "The [MASK]or statement iterates over a seq[MASK]ence"  # fits in the context with [CLS], [SEP]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=400, help="training steps of each model")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=48)
    args = parser.parse_args(argv)
    out = Path(args.out)

    text = builtin_text()[:300_000]
    chars = CharTokenizer.from_text(text + PROMPT + MASKED)
    ids = np.array(chars.encode(text))
    split = int(0.9 * len(ids))
    # BERT's special tokens get the ids after the characters.
    special = {name: chars.vocab_size + i for i, name in enumerate(("pad", "cls", "sep", "mask"))}
    vocab = chars.vocab_size + len(special)
    steps, block = args.steps, args.block_size
    training = TrainingConfig(max_steps=steps, lr=3e-3, warmup_steps=min(20, steps), eval_interval=steps,
                              eval_batches=4, log_interval=steps)

    ml.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=vocab, n_layer=2, n_head=4, n_embd=args.width, block_size=block))
    gpt_task = CausalLMTask(ids[:split], ids[split:], block, batch_size=16)
    Trainer(gpt, gpt_task, training, quiet=True).fit()
    gpt_loss = gpt_task.evaluate(gpt.eval(), 4)["val_loss"]

    ml.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=args.width, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=4 * args.width,
                                      max_position_embeddings=block, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, pad_token_id=special["pad"]))
    bert_task = MaskedLMTask(ids[:split], ids[split:], block, 16, special, vocab)
    Trainer(bert, bert_task, training, quiet=True).fit()
    bert_loss = bert_task.evaluate(bert.eval(), 4)["val_loss"]

    print(f"{'objective':<10} {'sees':<22} {'predicts':<26} {'positions with a loss':<22} held-out loss")
    print(f"{'causal':<10} {'the past only':<22} {'the next character':<26} {'all ' + str(block):<22} {gpt_loss:.3f}")
    print(f"{'masked':<10} {'both sides':<22} {'the [MASK]ed characters':<26} {'~15% of ' + str(block - 2):<22} "
          f"{bert_loss:.3f}")

    prompt = np.array([chars.encode(PROMPT)])
    continued = gpt.generate(prompt, max_new_tokens=block - prompt.shape[1])  # fill the context
    print(f"\nGPT continues   {PROMPT!r} -> {chars.decode(continued[0, prompt.shape[1]:].tolist())!r}")

    pieces = MASKED.split("[MASK]")
    masked_ids = [special["cls"]]
    for i, piece in enumerate(pieces):
        masked_ids += chars.encode(piece) + ([special["mask"]] if i < len(pieces) - 1 else [])
    masked_ids = np.array(masked_ids + [special["sep"]])
    with ml.no_grad():
        probabilities = ml.functional.softmax(bert(masked_ids[None]).logits, axis=-1).numpy()[0]  # [T, V]
    holes = np.flatnonzero(masked_ids == special["mask"])
    filled = [chars.decode([int(probabilities[i, :chars.vocab_size].argmax())]) for i in holes]
    print(f"BERT fills in    {MASKED!r} -> {filled} (the answers: ['f', 'u']); its top guesses:")
    for hole, answer in zip(holes, "fu"):
        top = np.argsort(-probabilities[hole, :chars.vocab_size])[:5]
        guesses = ", ".join(f"{chars.decode([int(i)])!r} {probabilities[hole, i]:.2f}" for i in top)
        print(f"  position {hole}: {guesses}   (P({answer!r}) = {probabilities[hole, chars.encode(answer)[0]]:.3f})")

    sample = PROMPT.strip()
    sample_ids = np.array(chars.encode(sample))
    labels = list(sample)
    causal_map = viz.attention_weights(gpt, sample_ids)[0].mean(axis=0)  # layer 0, mean over heads
    framed = np.concatenate([[special["cls"]], sample_ids, [special["sep"]]])
    masked_map = viz.attention_weights(bert, framed)[0].mean(axis=0)
    viz.save_attention_heatmap(causal_map, labels, out / "05_causal_attention.svg",
                               title="causal LM (GPT), layer 0: each character sees only the past")
    viz.save_attention_heatmap(masked_map, ["[CLS]"] + labels + ["[SEP]"], out / "05_masked_attention.svg",
                               title="masked LM (BERT), layer 0: each character sees both sides")
    print(f"\npictures in {out}/: 05_causal_attention.svg, 05_masked_attention.svg")
    return {"causal": gpt_loss, "masked": bert_loss, "filled": filled}


if __name__ == "__main__":
    main()
