"""`attend evaluate` and `attend compare`: a trained run's translations of a split (or any TSV
file) scored by sacreBLEU (and exact match; word and phone error rates for pronunciations), its
teacher-forced perplexity there, written beside the run, and BLEU by source length of several runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.plots import bleu_by_length_plot
from app.progress import progress
from app.recipe import held_out_perplexity
from app.run import RunDir
from app.scoring import bleu_by_length, corpus_scores, phone_error_rates, read_references
from app.translator import Translator, load_translator

TRANSLATE_BATCH = 64  # sentences per call, as Translator.translate_texts batches them; also a bar step


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    beam: int | None = None,
    source_file: Path | None = None,
    data_dir: Path = Path("data"),
    log=print,
    shortlist: bool | None = None,
) -> dict:
    """Scores a trained run on a split (or any TSV file); writes hypotheses, references, metrics and plots.
    `shortlist` overrides the run's `decode.shortlist` (its results go to a folder of their own).

    Everything that could stop it (the run, the input file, a writable output folder, the lock)
    is checked before translating, so that no translation work is lost to a late error."""
    run = RunDir(run_dir)
    config = run.config()
    tsv = source_file or data_dir / config.corpus_name / f"{split}.tsv"
    shards = sorted(tsv.parent.glob(f"{split}-*-of-*.tsv")) if not source_file else []
    if shards and not tsv.is_file():
        raise ValueError(
            f"The {split} split of {tsv.parent} is sharded into {len(shards)} files (a corpus of millions of "
            "pairs); score the dev or test split, or one file with --source FILE.tsv"
        )
    if not tsv.is_file():
        raise ValueError(
            f"No {tsv}; run `attend prepare --preset {run.config_path}` or pass --source FILE.tsv"
        )
    sources, references = read_references(tsv)
    with run.lock():
        translator = load_translator(run, beam_width=beam, shortlist=shortlist, data_dir=data_dir)
        name = f"{source_file.stem if source_file else split}-beam{translator.beam_width}"
        name += "-shortlist" if translator.shortlist is not None else ""
        run.evaluation_dir(name).mkdir(parents=True, exist_ok=True)
        hypotheses = translate_with_progress(translator, sources, f"{Path(run_dir).resolve().name} {name}")
        metrics = {
            **corpus_scores(hypotheses, references),
            "split": name.rsplit("-beam", 1)[0],
            "beam": translator.beam_width,
            "shortlist": translator.shortlist is not None,
            "sentences": len(sources),
            "references": sum(len(refs) for refs in references),
        }
        if config.data.pronunciations:  # a word is right when it equals any of its pronunciations
            metrics["phones"] = phone_error_rates(hypotheses, references)
        metrics.update(held_out_perplexity(translator.model, config, translator.tokenizers, tsv))
        metrics["bleu_by_length"] = bleu_by_length(sources, hypotheses, references)
        write_evaluation(run.evaluation_dir(name), sources, hypotheses, references, metrics)
    log(format_report(metrics))
    return metrics


def translate_with_progress(translator: Translator, sources: list[str], description: str) -> list[str]:
    """`translator.translate_texts(sources)`, a batch at a time under a progress bar on stderr."""
    hypotheses: list[str] = []
    with progress(total=len(sources), description=description) as bar:
        for start in range(0, len(sources), TRANSLATE_BATCH):
            batch = sources[start : start + TRANSLATE_BATCH]
            hypotheses += translator.translate_texts(batch, batch_size=TRANSLATE_BATCH)
            bar.update(len(batch))
    return hypotheses


def write_evaluation(
    directory: Path, sources: list[str], hypotheses: list[str], references: list[list[str]], metrics: dict
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sources.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (directory / "hypotheses.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    (directory / "references.tsv").write_text(
        "\n".join("\t".join(refs) for refs in references) + "\n", encoding="utf-8"
    )
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    bleu_by_length_plot(
        {f"beam {metrics['beam']}": metrics["bleu_by_length"]}, directory / "bleu_by_length.png"
    )


def format_report(metrics: dict) -> str:
    lines = [
        f"{metrics['split']}: {metrics['sentences']} sentences, {metrics['references']} references, "
        f"beam {metrics['beam']}",
        *_phone_lines(metrics.get("phones")),
        f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}  exact match {metrics['exact_match']:.2f} %"
        + (
            " (BLEU/chrF over phone strings: not meaningful for pronunciations)"
            if "phones" in metrics
            else ""
        ),
        f"perplexity {metrics['perplexity']:.2f} (teacher-forced; {metrics['target_tokens']:,} tokens)",
        f"  {metrics['signature']['bleu']}",
        f"  {metrics['signature']['chrf']}",
        "BLEU by source length (words):",
    ]
    lines += [
        f"  {row['bucket']:>6}  {row['sentences']:>5} sentences  BLEU {row['bleu']:6.2f}"
        for row in metrics["bleu_by_length"]
    ]
    return "\n".join(lines)


def _phone_lines(phones: dict | None) -> list[str]:
    """The g2p task's headline: word and phone error rates (none for translations)."""
    if not phones:
        return []
    return [
        f"WER {phones['wer']:.2f} % ({phones['wrong_words']:,} of {phones['words']:,} words wrong)  "
        f"PER {phones['per']:.2f} % ({phones['phone_errors']:,} edits / {phones['reference_phones']:,} "
        "phones of the closest references)"
    ]


def compare_by_length(
    run_dirs: list[Path],
    output: Path,
    split: str = "test",
    beam: int | None = 1,
    data_dir: Path = Path("data"),
    log=print,
) -> dict[str, list[dict]]:
    """BLEU by source length of several runs in one figure (the paper's Figure 2 comparison)."""
    tables = {}
    for run_dir in run_dirs:
        config = RunDir(run_dir).config()
        metrics = evaluate_run(run_dir, split, beam, data_dir=data_dir, log=log)
        label = f"{config.model.attention_style} ({run_dir.name}): BLEU {metrics['bleu']:.1f}"
        tables[label] = metrics["bleu_by_length"]
    output.parent.mkdir(parents=True, exist_ok=True)
    bleu_by_length_plot(tables, output, title=f"BLEU by source length ({split}, beam {beam})")
    log(f"Wrote {output}")
    return tables
