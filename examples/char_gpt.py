"""A character-level GPT on any text file (default: the Python docs built into CPython).

    python examples/char_gpt.py [--data FILE] [--steps 300]

Prints the validation loss as training goes, then a sample. A few minutes on a laptop CPU.
"""

import argparse

import numpy as np

import minilm as ml
from minilm.cli import builtin_text
from minilm.models import GPT, GPTConfig
from minilm.tokenizers import CharTokenizer
from minilm.train import CausalLMTask, Trainer, TrainingConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a UTF-8 text file")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=96)
    args = parser.parse_args(argv)

    text = open(args.data, encoding="utf-8").read() if args.data else builtin_text()
    tokenizer = CharTokenizer.from_text(text)
    ids = np.array(tokenizer.encode(text))
    split = int(0.9 * len(ids))
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=args.layers, n_head=4, n_embd=args.width,
                          block_size=args.block_size))
    task = CausalLMTask(ids[:split], ids[split:], args.block_size, batch_size=16)
    config = TrainingConfig(max_steps=args.steps, lr=3e-3, warmup_steps=min(30, args.steps),
                            eval_interval=max(1, args.steps // 3), eval_batches=10)
    Trainer(model, task, config).fit()
    prompt = np.array([tokenizer.encode("The ")])
    new_tokens = args.block_size - prompt.shape[1]  # a GPT sees at most block_size tokens
    sample = model.generate(prompt, max_new_tokens=new_tokens, do_sample=True, temperature=0.8, seed=0)
    print("--- sample ---")
    print(tokenizer.decode(sample[0].tolist()))


if __name__ == "__main__":
    main()
