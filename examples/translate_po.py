"""Train a small translation model on real parallel sentences: Django's gettext catalogs.

    pip install django            # any environment; the example only reads its .po files
    python examples/translate_po.py [--lang fr] [--steps 600]
    python examples/translate_po.py --locale-dir path/to/some/package --lang de

A gettext catalog (`<lang>/LC_MESSAGES/*.po`) pairs each English message of a program with
its translation, reviewed by people: Django ships about a thousand of them per language
(`django/conf/locale/fr/LC_MESSAGES/django.po` and one catalog per contrib app). They are
short interface strings ("Enter a valid email address.", "This field is required."): a
real, if small and repetitive, parallel corpus that comes with `pip install`.

The example reads every catalog for one language under a folder (by default the installed
Django's), holds out 10% of the pairs, trains an encoder-decoder Transformer with a joint
BPE, and prints the validation BLEU and ROUGE-L of beam search next to the copy baseline
(the English source given as the "translation"), with a few translations.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import minilm as ml
from minilm.models import Transformer, TransformerConfig
from minilm.seq2seq_data import read_po, special_ids, split_pairs, train_joint_bpe
from minilm.train import Seq2SeqTask, Trainer, TrainingConfig
from minilm.train.seq2seq import score_outputs, translate


def find_catalogs(locale_dir, lang: str) -> list[Path]:
    """Every `<lang>/LC_MESSAGES/*.po` under `locale_dir` (default: the installed Django)."""
    if locale_dir is None:
        spec = importlib.util.find_spec("django")
        if spec is None or spec.origin is None:
            raise SystemExit("translate_po: Django is not installed and no --locale-dir was given: "
                             "pip install django (it is only read), or pass a folder holding "
                             "<lang>/LC_MESSAGES/*.po catalogs")
        locale_dir = Path(spec.origin).parent
    locale_dir = Path(locale_dir)
    if not locale_dir.is_dir():
        raise SystemExit(f"translate_po: {locale_dir} is not a folder")
    catalogs = sorted(locale_dir.rglob(f"{lang}/LC_MESSAGES/*.po"))
    if not catalogs:
        raise SystemExit(f"translate_po: no {lang}/LC_MESSAGES/*.po catalog under {locale_dir}")
    return catalogs


def read_catalogs(catalogs, max_chars: int) -> list[tuple[str, str]]:
    """The distinct single-line pairs of the catalogs, each side at most `max_chars` long."""
    pairs = {}
    for path in catalogs:
        for source, target in read_po(path):
            if len(source) <= max_chars and len(target) <= max_chars and "\n" not in source + target:
                pairs.setdefault(source, target)  # the first translation of a message wins
    return sorted(pairs.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locale-dir", help="a folder holding <lang>/LC_MESSAGES/*.po (default: installed Django)")
    parser.add_argument("--lang", default="fr", help="target language code (default fr)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    parser.add_argument("--width", type=int, default=128, help="model width (default 128)")
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers (default 2)")
    parser.add_argument("--vocab-size", type=int, default=1500, help="joint BPE vocabulary (default 1500)")
    parser.add_argument("--max-chars", type=int, default=80, help="longest message kept (default 80 characters)")
    parser.add_argument("--num-beams", type=int, default=4, help="beam width for the translations (default 4)")
    parser.add_argument("--samples", type=int, default=5, help="translations to print (default 5)")
    args = parser.parse_args(argv)

    catalogs = find_catalogs(args.locale_dir, args.lang)
    pairs = read_catalogs(catalogs, args.max_chars)
    if len(pairs) < 10:
        raise SystemExit(f"translate_po: only {len(pairs)} usable pairs in {len(catalogs)} catalogs")
    train, val = split_pairs(pairs, 0.1, seed=0)
    print(f"{len(catalogs)} catalogs, {len(pairs)} English -> {args.lang} pairs: {len(train)} train / {len(val)} "
          f"validation")
    tokenizer = train_joint_bpe(train, args.vocab_size)
    ids = special_ids(tokenizer)
    ml.manual_seed(0)
    model = Transformer(TransformerConfig(
        vocab_size=tokenizer.vocab_size, d_model=args.width, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=4 * args.width,
        decoder_ffn_dim=4 * args.width, max_position_embeddings=128, activation="relu", init_std=args.width ** -0.5,
        dropout=0.1, pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
        decoder_start_token_id=ids["bos"]))
    task = Seq2SeqTask(train, val, tokenizer, batch_size=32, max_source_len=64, max_target_len=64,
                       label_smoothing=0.1, generate_examples=32)
    config = TrainingConfig(max_steps=args.steps, batch_size=32, lr=2e-3, warmup_steps=min(50, args.steps),
                            eval_interval=max(1, args.steps // 3), eval_batches=10)
    Trainer(model, task, config).fit()

    sources, references = [s for s, _ in val], [t for _, t in val]
    outputs = translate(model, tokenizer, sources, max_source_len=64, max_new_tokens=64, num_beams=args.num_beams)
    ours, copy = score_outputs(outputs, references), score_outputs(sources, references)
    print(f"validation ({len(val)} pairs, {args.num_beams} beams): BLEU {ours['bleu']:.2f}, "
          f"ROUGE-L {ours['rouge_l']:.2f}")
    print(f"copy baseline (the English unchanged): BLEU {copy['bleu']:.2f}, ROUGE-L {copy['rouge_l']:.2f}")
    for source, reference, output in list(zip(sources, references, outputs))[: args.samples]:
        print(f"  en:    {source}\n  {args.lang}:    {reference}\n  model: {output}\n")
    return {"pairs": len(pairs), "bleu": ours["bleu"], "copy_bleu": copy["bleu"], "outputs": outputs}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
