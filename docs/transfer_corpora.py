"""The corpora of the README's transfer and word-vector measurements, from the prepared default splits.

Why a script: the figures in "Transfer learning and other tasks" compare runs that must share one
test set and never see it, and anyone should be able to remake them. The default preset's es→en
dev and test splits (`data/bible-v-4/`, `attend prepare --preset default`) are held out everywhere:

- `fr-en.tsv`: Louis Segond 1910 → World English Bible, every verse whose Spanish or English side is
  in those splits dropped (the parent run);
- `child-es-en.tsv`: 2,200 pairs of the default train split (shuffled with seed 0), which the app
  splits 2,000 / 100 / 100 with `data.dev_size=100 data.test_size=100` (the small-data runs);
- `mono-en.txt`, `mono-es.txt`: the monolingual verses for word2vec, English from King James and
  Basic English, Spanish from Reina-Valera, held-out verses dropped.

    python docs/transfer_corpora.py OUT_DIR [--data-dir data]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from app.config import load_config
from app.data.bible import bible_db_name, read_bible_pairs
from app.data.tokenizer import read_lines

CHILD_PAIRS = 2200
CHILD_SEED = 0
# the monolingual side of each language: (source, target) Bibles joined, and the column kept
MONOLINGUAL = {"en": [("v", "k", 2), ("v", "3", 2)], "es": [("v", "4", 1)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    database = args.data_dir / "cache" / bible_db_name()
    default = args.data_dir / load_config("default").corpus_name

    held = [line.split("\t") for line in read_lines([default / "dev.tsv", default / "test.tsv"])]
    held_sources, held_targets = {row[0] for row in held}, {row[1] for row in held}
    print(f"held out: {len(held):,} pairs of {default}")

    spanish = {reference: source for reference, source, _ in read_bible_pairs(database, "v", "4")}
    held_references, kept = set(), 0
    with open(args.out_dir / "fr-en.tsv", "w", encoding="utf-8") as out:
        for reference, french, english in read_bible_pairs(database, "l", "4"):
            if not french or not english:
                continue
            if english in held_targets or spanish.get(reference) in held_sources:
                held_references.add(reference)
                continue
            out.write(f"{french}\t{english}\n")
            kept += 1
    print(f"fr-en.tsv: {kept:,} pairs, {len(held_references):,} held-out verses dropped")

    train = [line.split("\t") for line in read_lines(default / "train.tsv")]
    random.Random(CHILD_SEED).shuffle(train)
    with open(args.out_dir / "child-es-en.tsv", "w", encoding="utf-8") as out:
        out.writelines(f"{source}\t{target}\n" for source, target, *_ in train[:CHILD_PAIRS])
    print(f"child-es-en.tsv: {CHILD_PAIRS:,} of {len(train):,} train pairs")

    for side, joins in MONOLINGUAL.items():
        verses = 0
        with open(args.out_dir / f"mono-{side}.txt", "w", encoding="utf-8") as out:
            for source, target, column in joins:
                for verse in read_bible_pairs(database, source, target):
                    if verse[column] and verse[0] not in held_references:
                        out.write(verse[column] + "\n")
                        verses += 1
        print(f"mono-{side}.txt: {verses:,} verses")


if __name__ == "__main__":
    main()
