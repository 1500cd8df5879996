"""Evaluation: corpus BLEU and chrF the standard way (sacreBLEU), multi-reference, BLEU by length.

sacreBLEU computes both scores from detokenized text with its own tokenisation (13a for BLEU),
so figures are comparable with published ones; its signature says exactly how. When a source
occurs several times in a split with different targets, all of them are references.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf
from sacrebleu.metrics import BLEU, CHRF

from app.config import load_config
from app.export import load_translator
from app.plots import bleu_by_length_plot

LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 30), (31, 40), (41, 50), (51, 10_000))


def read_references(tsv_path: Path) -> tuple[list[str], list[list[str]]]:
    """Unique sources in file order, each with every target it has in the file."""
    references: dict[str, list[str]] = {}
    with open(tsv_path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2:
                raise ValueError(f"{tsv_path}:{number}: expected source<TAB>target")
            references.setdefault(fields[0], []).append(fields[1])
    return list(references), list(references.values())


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """sacreBLEU corpus BLEU and chrF; `references[i]` lists the references of sentence i."""
    most = max((len(refs) for refs in references), default=1)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, streams)
    chrf_score = chrf.corpus_score(hypotheses, streams)
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
        "bleu_detail": str(bleu_score),
    }


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[list[str]]) -> list[dict]:
    """Corpus BLEU within source-length buckets (in words), as in Bahdanau et al.'s Figure 2."""
    rows = []
    for low, high in LENGTH_BUCKETS:
        chosen = [i for i, source in enumerate(sources) if low <= len(source.split()) <= high]
        label = f"{low}-{high}" if high < 10_000 else f"{low}+"
        bleu = (
            corpus_scores([hypotheses[i] for i in chosen], [references[i] for i in chosen])["bleu"]
            if chosen
            else 0.0
        )
        rows.append({"bucket": label, "sentences": len(chosen), "bleu": bleu})
    return rows


def translate_all(translate: Callable, sentences: list[str], batch_size: int = 64) -> list[str]:
    """Translates in batches through a Translator's `translate` tf.function."""
    outputs: list[str] = []
    for start in range(0, len(sentences), batch_size):
        batch = tf.constant(sentences[start : start + batch_size], tf.string)
        outputs += [text.decode("utf-8") for text in translate(batch)["translation"].numpy()]
    return outputs


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    beam: int | None = None,
    source_file: Path | None = None,
    data_dir: Path = Path("data"),
    log=print,
) -> dict:
    """Scores a trained run on a split (or any TSV file); writes hypotheses, references, metrics and plots."""
    config = load_config(str(run_dir / "config.yaml"))
    tsv = source_file or data_dir / config.corpus_name / f"{split}.tsv"
    if not tsv.is_file():
        raise ValueError(
            f"No {tsv}; run `attend prepare --preset {run_dir / 'config.yaml'}` or pass --source FILE.tsv"
        )
    sources, references = read_references(tsv)
    translator = load_translator(run_dir, beam_width=beam)
    hypotheses = translate_all(translator.translate, sources)
    name = f"{source_file.stem if source_file else split}-beam{translator.beam_width}"
    metrics = {
        **corpus_scores(hypotheses, references),
        "split": name.rsplit("-beam", 1)[0],
        "beam": translator.beam_width,
        "sentences": len(sources),
        "references": sum(len(refs) for refs in references),
    }
    metrics["bleu_by_length"] = bleu_by_length(sources, hypotheses, references)
    write_evaluation(run_dir / "evaluation" / name, sources, hypotheses, references, metrics)
    log(format_report(metrics))
    return metrics


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
        f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}",
        f"  {metrics['signature']['bleu']}",
        f"  {metrics['signature']['chrf']}",
        "BLEU by source length (words):",
    ]
    lines += [
        f"  {row['bucket']:>6}  {row['sentences']:>5} sentences  BLEU {row['bleu']:6.2f}"
        for row in metrics["bleu_by_length"]
    ]
    return "\n".join(lines)


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
        config = load_config(str(run_dir / "config.yaml"))
        metrics = evaluate_run(run_dir, split, beam, data_dir=data_dir, log=log)
        label = f"{config.model.attention_style} ({run_dir.name}): BLEU {metrics['bleu']:.1f}"
        tables[label] = metrics["bleu_by_length"]
    output.parent.mkdir(parents=True, exist_ok=True)
    bleu_by_length_plot(tables, output, title=f"BLEU by source length ({split}, beam {beam})")
    log(f"Wrote {output}")
    return tables
