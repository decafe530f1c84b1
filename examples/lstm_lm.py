"""The classic neural language model: an LSTM on BPE tokens of the built-in docs.

    python examples/lstm_lm.py [--steps 300]

Reports validation perplexity next to a unigram baseline, then samples a continuation.
"""

import argparse

import numpy as np

import minilm as ml
from minilm.cli import builtin_text, unigram_perplexity
from minilm.models import LSTMConfig, LSTMLanguageModel
from minilm.tokenizers import BPETokenizer
from minilm.train import CausalLMTask, Trainer, TrainingConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=192)
    args = parser.parse_args(argv)

    text = builtin_text()
    split = int(0.9 * len(text))
    tokenizer = BPETokenizer.train(text[:split], args.vocab_size, verbose=False)
    train_ids = np.array(tokenizer.encode_ordinary(text[:split]))
    val_ids = np.array(tokenizer.encode_ordinary(text[split:]))
    ml.manual_seed(0)
    model = LSTMLanguageModel(LSTMConfig(vocab_size=tokenizer.vocab_size, n_embd=args.hidden,
                                         hidden_size=args.hidden, num_layers=2, tie_weights=True))
    task = CausalLMTask(train_ids, val_ids, block_size=64, batch_size=16)
    config = TrainingConfig(max_steps=args.steps, lr=5e-3, warmup_steps=min(20, args.steps),
                            eval_interval=max(1, args.steps // 3), eval_batches=10, betas=(0.9, 0.99))
    trainer = Trainer(model, task, config)
    trainer.fit()
    ppl = trainer.evaluate()["val_ppl"]
    print(f"LSTM validation perplexity {ppl:.1f}; unigram baseline "
          f"{unigram_perplexity(train_ids, val_ids, tokenizer.vocab_size):.1f}")
    prompt = tokenizer.encode_ordinary("The for statement")
    out = model.generate(np.array([prompt]), max_new_tokens=40, do_sample=True, temperature=0.8, seed=0)
    print(tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    main()
