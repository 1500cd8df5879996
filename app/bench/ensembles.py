"""`python -m app.bench.ensembles TEST.tsv EXPORT…`: test BLEU (with its 95 % confidence margin) and
decode cost per sentence of several SavedModels side by side, for docs/training.md's comparison of
an ensemble of a run's last epochs with its best checkpoint and with their weight average.

Each export is reloaded as a serving program loads it (`export_translate`) and decodes with its own
settings (`decode.beam_width` of its card): the whole file in batches of 64, timed after one warm-up
call (milliseconds per sentence: the throughput cost), then its first `--batch-1` sources one at a
time (the median: the latency cost). One JSON line per export, then a Markdown table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tensorflow_text  # noqa: F401  (registers the exports' SentencePiece ops)

from app.bench.decoding import export_translate, measure_translate
from app.scoring import read_references

BATCH_1_SENTENCES = 100


def measure_export(folder: Path, sources: list[str], references: list[list[str]], batch_1: int) -> dict:
    """One export's BLEU (± its 95 % margin) on `sources`, and its decode cost per sentence."""
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    figures = measure_translate(export_translate(folder), sources, references, batch_1)
    ensemble = card.get("export", {}).get("ensemble")
    return {
        "export": str(folder),
        "members": len(ensemble["members"]) if ensemble else 1,
        "epochs": [member["epoch"] for member in ensemble["members"]] if ensemble else None,
        "beam": card["config"]["decode"]["beam_width"],
        "sentences": figures["sentences"],
        "bleu": figures["bleu"],
        "bleu_ci95": figures["bleu_ci95"],
        "ms_per_sentence_batch64": figures["ms_per_sentence_batch64"],
        "ms_per_sentence_batch1_p50": figures["ms_batch1_p50"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.bench.ensembles", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("test_file", type=Path, help="source<TAB>reference lines (a prepared test.tsv)")
    parser.add_argument("exports", type=Path, nargs="+", help="SavedModel folders (attend export --out …)")
    parser.add_argument(
        "--batch-1", type=int, default=BATCH_1_SENTENCES, help="sources timed one at a time (default: 100)"
    )
    args = parser.parse_args(argv)
    sources, references = read_references(args.test_file)
    rows = []
    for folder in args.exports:
        rows.append(measure_export(folder, sources, references, args.batch_1))
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| export | members | beam | BLEU (± 95 %) | ms/sentence, batch 64 | ms/sentence, batch 1 (p50) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        bleu = f"{row['bleu']:.2f} ± {row['bleu_ci95']:.2f}"
        costs = f"{row['ms_per_sentence_batch64']} | {row['ms_per_sentence_batch1_p50']}"
        print(f"| {Path(row['export']).name} | {row['members']} | {row['beam']} | {bleu} | {costs} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
