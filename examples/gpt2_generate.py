"""Load a Hugging Face GPT-2 checkpoint folder and generate with minilm.

    python examples/gpt2_generate.py --checkpoint DIR [--prompt "Hello"]

DIR holds config.json, model.safetensors, vocab.json and merges.txt, as the Hugging Face
GPT-2 folders do (e.g. a download of "gpt2", or any GPT-2 saved with save_pretrained).
Without --checkpoint, the script first writes such a folder itself (a small GPT-2 with
random weights and a BPE tokenizer trained on the built-in docs, exported in the GPT-2
file formats) and then loads it back exactly as it would load a real one.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import minilm as ml
from minilm.cli import builtin_text
from minilm.models import GPT, GPTConfig
from minilm.tokenizers import BPETokenizer


def write_demo_checkpoint(folder: Path) -> None:
    tokenizer = BPETokenizer.train(builtin_text()[:200_000], 600, pattern="gpt2", special_tokens=["<|endoftext|>"],
                                   verbose=False)
    tokenizer.save_vocab_and_merges(folder)  # GPT-2's vocab.json + merges.txt
    ml.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=128)
    GPT(config).save_pretrained(folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a Hugging Face GPT-2 folder")
    parser.add_argument("--prompt", default="The for statement")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args(argv)
    folder = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp(prefix="gpt2-demo-"))
    if not args.checkpoint:
        write_demo_checkpoint(folder)
        print(f"(no --checkpoint: wrote a random-weight demo GPT-2 to {folder})")
    tokenizer = BPETokenizer.from_pretrained(folder)
    model = GPT.from_pretrained(folder)
    prompt = tokenizer.encode_ordinary(args.prompt)
    greedy = model.generate(np.array([prompt]), max_new_tokens=args.max_new_tokens)
    beams = model.generate(np.array([prompt]), max_new_tokens=args.max_new_tokens, num_beams=4)
    sampled = model.generate(np.array([prompt]), max_new_tokens=args.max_new_tokens, do_sample=True, top_p=0.9, seed=0)
    for name, ids in (("greedy", greedy), ("beam search (4)", beams), ("top-p 0.9", sampled)):
        print(f"--- {name} ---\n{tokenizer.decode(ids[0].tolist())}")
    return greedy


if __name__ == "__main__":
    main()
