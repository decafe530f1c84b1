"""05 - Two ways to learn from raw text: causal LM (GPT) and masked LM (BERT).

    python examples/learn/05_causal_vs_masked.py [--out learn_out] [--steps 800]

Both objectives turn unlabeled text into prediction exercises; they differ in what the
model may look at:

- causal LM: predict every token from the tokens before it. The attention is masked to
  the past (a lower-triangular map), every position is a training example, and the model
  can generate text left to right.
- masked LM: hide 15% of the tokens ([MASK]) and predict them from both sides. The
  attention sees the whole sequence (a full map), only the hidden positions give a loss,
  and the model's vectors describe each token in its full context (good for
  classification, search) but it cannot simply continue a text.

The text is made up so that context decides words: a small world where every animal has its
own sound, home and food ("the dog barks .", "the old cow sleeps in the field ."). A model
that only learned how often each word occurs would guess "the" everywhere; to do better it
must read the neighbours. Both models read the same sentences with the same size of network
and the same number of steps: the GPT as one running text, the BERT one sentence at a time,
framed as [CLS] sentence [SEP] (as BERT is pretrained). A masked LM learns only from the ~15%
of words it hides, so it reads 64 sentences a step (~75 hidden words) where the GPT reads 16
windows of 16 words (256 predictions).

Printed: each model's accuracy on held-out text against that frequency baseline; the GPT
continuing a prompt; the BERT filling two blanks, one decided by the word after it (which a
causal model cannot see: the GPT's guess at the same place is printed beside it) and one by a
word several places before it. Pictures: the two attention maps side by side.
"""

import argparse
from pathlib import Path

import numpy as np

import minilm as ml
from minilm import viz
from minilm.data import MaskedLMCollator
from minilm.models import GPT, BertConfig, BertForMaskedLM, GPTConfig
from minilm.train import CausalLMTask, Trainer, TrainingConfig

ANIMALS = {  # animal: (its sound, where it sleeps, what it eats)
    "cat": ("meows", "house", "milk"),
    "dog": ("barks", "kennel", "bones"),
    "cow": ("moos", "field", "grass"),
    "bird": ("sings", "nest", "seeds"),
    "duck": ("quacks", "pond", "bread"),
    "horse": ("neighs", "stable", "hay"),
    "owl": ("hoots", "barn", "mice"),
    "bee": ("buzzes", "hive", "nectar"),
}
ADJECTIVES = ["big", "small", "old", "young", "lazy", "happy"]  # chosen at random: no context predicts them


def true_sentences() -> list[str]:
    """Every sentence that is true in the toy world (8 animals x 7 adjective choices x 3 templates)."""
    sentences = []
    for animal, (sound, home, food) in ANIMALS.items():
        for subject in [f"the {animal}"] + [f"the {adjective} {animal}" for adjective in ADJECTIVES]:
            sentences += [f"{subject} {sound} .", f"{subject} sleeps in the {home} .", f"{subject} eats {food} ."]
    return sentences


SENTENCES = true_sentences()
WORDS = sorted({word for sentence in SENTENCES for word in sentence.split()})
VOCAB = WORDS + ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's special tokens get the ids after the words
ID = {word: i for i, word in enumerate(VOCAB)}
SPECIAL = {"pad": ID["[PAD]"], "cls": ID["[CLS]"], "sep": ID["[SEP]"], "mask": ID["[MASK]"]}

PROMPT = "the cow"
BLANKS = ["the [MASK] barks .", "the cow sleeps in the [MASK] ."]
ANSWERS = ["dog", "field"]  # the first decided by the word after the blank, the second by "cow", four words before


def encode(text: str) -> np.ndarray:
    return np.array([ID[word] for word in text.split()], dtype=np.int64)


def decode(ids) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


def make_sentences(count: int, seed: int) -> list[np.ndarray]:
    """`count` random true sentences of the toy world, as word ids."""
    rng = np.random.default_rng(seed)
    return [encode(SENTENCES[i]) for i in rng.integers(0, len(SENTENCES), size=count)]


def frame(sentences) -> tuple[np.ndarray, np.ndarray]:
    """BERT's input: [CLS] sentence [SEP], padded to the longest, and the attention mask (1 = word, 0 = padding)."""
    length = max(len(sentence) for sentence in sentences) + 2
    ids = np.full((len(sentences), length), SPECIAL["pad"], dtype=np.int64)  # [B, T]
    attention_mask = np.zeros((len(sentences), length), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        ids[row, : len(sentence) + 2] = [SPECIAL["cls"], *sentence, SPECIAL["sep"]]
        attention_mask[row, : len(sentence) + 2] = 1
    return ids, attention_mask


class SentenceMaskedLMTask:
    """The Trainer's view of masked-LM pretraining on sentences: a random batch of sentences
    each step, 15% of their words chosen by BERT's masking (minilm.data.MaskedLMCollator).

    minilm.train.MaskedLMTask cuts windows from a running text instead. Here a row is one
    sentence, so the words that decide a blank are the only candidates in sight: this small
    BERT then learns "barks" -> "dog" in a few hundred steps, where on windows spanning two
    or three sentences it needs several times as many.
    """

    metric = "val_loss"

    def __init__(self, train: list, val: list, batch_size: int, seed: int = 0):
        self.train, self.val, self.batch_size = train, val, batch_size
        self.rng = np.random.default_rng(seed)
        self.collator = MaskedLMCollator(SPECIAL["mask"], len(VOCAB), list(SPECIAL.values()), seed=seed + 1)

    def _masked(self, sentences, collator) -> dict:
        ids, attention_mask = frame(sentences)
        ids, labels = collator(ids)
        return {"ids": ids, "attention_mask": attention_mask, "labels": labels}

    def next_batch(self) -> dict:
        return self._masked([self.train[i] for i in self.rng.integers(0, len(self.train), self.batch_size)],
                            self.collator)

    @staticmethod
    def loss(model, batch):
        return model(batch["ids"], batch["attention_mask"], labels=batch["labels"]).loss

    def evaluate(self, model, max_batches: int) -> dict:
        fixed = MaskedLMCollator(SPECIAL["mask"], len(VOCAB), list(SPECIAL.values()), seed=1234)  # same words each time
        sentences = self.val[: max_batches * self.batch_size]
        return {"val_loss": float(self.loss(model, self._masked(sentences, fixed)).item())}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "collator": self.collator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.collator.load_state_dict(state["collator"])


def next_word_accuracy(gpt, text: np.ndarray, block: int) -> tuple[float, np.ndarray]:
    """The share of held-out words the GPT predicts right from the words before them, and those words."""
    windows = len(text) // (block + 1)
    rows = text[: windows * (block + 1)].reshape(windows, block + 1)  # [N, block + 1]
    with ml.no_grad():
        logits = gpt.eval()(rows[:, :-1]).logits.numpy()  # [N, block, V]
    return float((logits.argmax(-1) == rows[:, 1:]).mean()), rows[:, 1:].ravel()


def masked_word_accuracy(bert, sentences: list, seed: int = 1234) -> tuple[float, np.ndarray]:
    """Hide 15% of the held-out words behind [MASK]; the share the BERT guesses right, and the hidden words.

    Unlike training (where a tenth of the chosen words are replaced at random and a tenth
    left as they are, so the model cannot trust what it sees), every chosen word is really
    hidden: the accuracy measures reading the context only.
    """
    ids, attention_mask = frame(sentences)  # [N, T]
    words = ids < len(WORDS)  # not [CLS], [SEP] or padding
    hidden = (np.random.default_rng(seed).random(ids.shape) < 0.15) & words
    with ml.no_grad():
        logits = bert.eval()(np.where(hidden, SPECIAL["mask"], ids), attention_mask).logits.numpy()  # [N, T, V]
    return float((logits.argmax(-1)[hidden] == ids[hidden]).mean()), ids[hidden]


def top_words(probabilities: np.ndarray, k: int = 4) -> list[str]:
    return [VOCAB[int(i)] for i in np.argsort(-probabilities)[:k]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=800, help="training steps of each model")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=16, help="words per GPT training window")
    parser.add_argument("--sentences", type=int, default=20_000, help="sentences of training text")
    args = parser.parse_args(argv)
    out = Path(args.out)

    train, held_out = make_sentences(args.sentences, seed=0), make_sentences(2_000, seed=1)
    train_text, held_out_text = np.concatenate(train), np.concatenate(held_out)  # the GPT's running text
    steps, block = args.steps, args.block_size
    training = TrainingConfig(max_steps=steps, lr=3e-3, warmup_steps=min(20, steps), eval_interval=steps,
                              eval_batches=4, log_interval=steps)

    ml.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=len(VOCAB), n_layer=2, n_head=4, n_embd=args.width, block_size=block))
    Trainer(gpt, CausalLMTask(train_text, held_out_text, block, batch_size=16), training, quiet=True).fit()
    causal_accuracy, next_words = next_word_accuracy(gpt, held_out_text, block)

    ml.manual_seed(0)
    longest = max(len(sentence.split()) for sentence in SENTENCES + BLANKS) + 2  # with [CLS] and [SEP]
    bert = BertForMaskedLM(BertConfig(vocab_size=len(VOCAB), hidden_size=args.width, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=4 * args.width,
                                      max_position_embeddings=longest, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, pad_token_id=SPECIAL["pad"]))
    Trainer(bert, SentenceMaskedLMTask(train, held_out, batch_size=64), training, quiet=True).fit()
    masked_accuracy, hidden_words = masked_word_accuracy(bert, held_out)

    # The bar both must clear: always guessing the training text's most frequent word (no context).
    most_frequent = int(np.bincount(train_text, minlength=len(VOCAB)).argmax())
    baseline = {"causal": float((next_words == most_frequent).mean()),
                "masked": float((hidden_words == most_frequent).mean())}
    print(f"{len(train_text):,} training words ({args.sentences:,} sentences, {len(WORDS)} distinct words), "
          f"{len(held_out_text):,} held out\n")
    print(f"{'objective':<10} {'sees':<15} {'predicts':<26} {'held-out accuracy':<19} "
          f"always {VOCAB[most_frequent]!r} (the frequency baseline)")
    print(f"{'causal':<10} {'the past only':<15} {'every next word':<26} {causal_accuracy:<19.0%} "
          f"{baseline['causal']:.0%}")
    print(f"{'masked':<10} {'both sides':<15} {'the 15% [MASK]ed words':<26} {masked_accuracy:<19.0%} "
          f"{baseline['masked']:.0%}")

    # Sampled (temperature 0.8, top-k 5): greedy decoding of a small model can loop on its
    # likeliest words, which shows the decoder, not what the model learned.
    prompt = encode(PROMPT)[None]  # [1, P]
    continued = gpt.generate(prompt, max_new_tokens=block - prompt.shape[1], do_sample=True, temperature=0.8,
                             top_k=5, seed=0)  # fill the context
    continuation = continued[0, prompt.shape[1]:].tolist()
    written = [sentence + " ." for sentence in decode(continued[0]).split(" . ")[:-1]]  # the complete sentences
    print(f"\nGPT continues {PROMPT!r} -> {decode(continuation)!r} (sampled)")
    print(f"  {sum(sentence in SENTENCES for sentence in written)} of its {len(written)} complete sentences "
          "are true in the toy world")

    ids, attention_mask = frame([encode(text) for text in BLANKS])  # [2, T]
    rows, holes = np.nonzero(ids == SPECIAL["mask"])  # one blank per sentence
    with ml.no_grad():
        probabilities = ml.functional.softmax(bert(ids, attention_mask).logits, axis=-1).numpy()[rows, holes]  # [2, V]
        # The GPT at the first blank has read only "the": the next word may be any animal or adjective.
        before_blank = ids[0, 1 : holes[0]][None]  # [1, P]
        gpt_next = ml.functional.softmax(gpt(before_blank).logits, axis=-1).numpy()[0, -1]  # [V]
    top_guesses = [top_words(p[: len(WORDS)]) for p in probabilities]
    print("BERT fills in the blanks; its top guesses:")
    for text, answer, p, guesses in zip(BLANKS, ANSWERS, probabilities, top_guesses):
        print(f"  {text!r:<34} {', '.join(f'{w!r} {p[ID[w]]:.2f}' for w in guesses)}   "
              f"(P({answer!r}) = {p[ID[answer]]:.2f})")
    print(f"GPT at the first blank, seeing only {decode(before_blank[0])!r}: "
          f"{', '.join(f'{w!r} {gpt_next[ID[w]]:.2f}' for w in top_words(gpt_next))}   "
          f"(P({ANSWERS[0]!r}) = {gpt_next[ID[ANSWERS[0]]]:.2f}: the word that decides it comes after)")

    sample = "the old cow sleeps in the field ."
    labels = sample.split()
    causal_map = viz.attention_weights(gpt, encode(sample))[0].mean(axis=0)  # layer 0, mean over heads
    framed, _ = frame([encode(sample)])
    masked_map = viz.attention_weights(bert, framed[0])[0].mean(axis=0)
    viz.save_attention_heatmap(causal_map, labels, out / "05_causal_attention.svg",
                               title="causal LM (GPT), layer 0: each word sees only the past")
    viz.save_attention_heatmap(masked_map, ["[CLS]"] + labels + ["[SEP]"], out / "05_masked_attention.svg",
                               title="masked LM (BERT), layer 0: each word sees both sides")
    print(f"\npictures in {out}/: 05_causal_attention.svg, 05_masked_attention.svg")
    return {"causal_accuracy": causal_accuracy, "masked_accuracy": masked_accuracy, "baseline": baseline,
            "top_guesses": top_guesses, "answers": ANSWERS, "continuation": continuation,
            "true_sentences": sum(sentence in SENTENCES for sentence in written), "sentences_written": len(written),
            "gpt_at_first_blank": float(gpt_next[ID[ANSWERS[0]]]),
            "bert_at_first_blank": float(probabilities[0, ID[ANSWERS[0]]])}


if __name__ == "__main__":
    main()
