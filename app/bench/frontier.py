"""`python -m app.bench.frontier LABEL=RUN_DIR … --tutorial-steps N`: the quality–speed frontier of
trained runs beside the TensorFlow tutorial's model, measured in one run on one CPU (issue #31).

Every point is one SavedModel measured by one function (`measure_translate`) on the whole test
split of the first run's corpus: sacreBLEU with its 95 % margin, sentences/s decoding the file in
batches of 64, and the median latency of its first 100 sentences one at a time. Each run gives up to
four exports of its kept checkpoint (`--exports`: greedy and beam 4, each with and without the
target-vocabulary shortlist); the tutorial's model (`app.bench.tutorial`) trains in its own process
on the first run's pairs (its config's length limits) for `--tutorial-steps`, so that its BLEU is
compared at the steps a run took (4 epochs of 447 batches: 1,788), and its export is measured like
the others (`--tutorial-export DIR` measures one trained before instead: only the measuring needs a
quiet CPU, so the training can run beside other work). The report is JSON (`--out`), a Markdown
table and a plot of BLEU against sentences/s (`--plot`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from app.bench.decoding import bucket_sources, export_translate, measure_translate
from app.bench.host import machine_description
from app.bench.training import SERVING_EXPORTS, export_run_for_serving

BATCH_1_SENTENCES = 100
FRONTIER_EXPORTS = ("greedy", "beam4", "greedy_shortlist", "beam4_shortlist")
TUTORIAL = "tutorial"


def tutorial_translate(folder: Path):
    """The tutorial's export, reloaded: its `translate` function on a batch of strings, and its
    parameter count (the model's weights in the SavedModel's checkpoint, the optimizer's left out)."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))

    def translate(batch: list[str]) -> list[str]:
        return [text.decode() for text in loaded.translate(tf.constant(batch)).numpy()]

    saved = tf.train.load_checkpoint(str(folder / "variables" / "variables")).get_variable_to_shape_map()
    # each variable is saved once, under the first path that reaches it: some of the model's weights
    # only under the optimizer's list of trainable variables, beside which its slots are left out
    weights = [
        shape
        for name, shape in saved.items()
        if name.startswith("model/")
        and ("/optimizer/" not in name or "/optimizer/_trainable_variables/" in name)
    ]
    return translate, sum(int(np.prod(shape)) for shape in weights)


def train_tutorial(run_dir: Path, data_dir: Path, steps: int, export_dir: Path, quick: bool = False) -> dict:
    """The bench's `tutorial` phase in its own process, on `run_dir`'s config (its corpus, length
    limits, seed and output limit); the phase also times it on the bench's buckets of that corpus.
    `quick`: the tutorial at `--quick`'s size (GRU 32, vocabularies of 500), for tests."""
    from app.processes import run_python_for_json
    from app.run import RunDir

    run = RunDir(run_dir)
    corpus_dir = data_dir / run.config().corpus_name
    sources_file = export_dir.parent / "sources.json"
    sources = bucket_sources(corpus_dir, run.vocab_dir / "source.model")
    sources_file.write_text(json.dumps(sources, ensure_ascii=False))
    arguments = ["-m", "app.bench", "tutorial", "--preset", str(run.config_path), "--data-dir", str(data_dir)]
    arguments += ["--export-dir", str(export_dir), "--sources", str(sources_file)]
    arguments += ["--test-file", str(corpus_dir / "test.tsv"), "--steps", str(steps)]
    arguments += ["--quick"] if quick else []
    return run_python_for_json(arguments, "the tutorial's model")


def measure_frontier(
    runs: dict[str, Path],
    data_dir: Path,
    tutorial_steps: int,
    exports: tuple[str, ...],
    quick: bool = False,
    log=print,
    tutorial_export: Path | None = None,
) -> dict:
    """Every export of every run, and the tutorial: its export `tutorial_export` where given (trained
    before, e.g. beside other work, since only its measurement needs a quiet CPU), else trained for
    `tutorial_steps` (0: left out)."""
    import tensorflow_text  # noqa: F401  (registers the exports' SentencePiece ops)

    from app.run import RunDir
    from app.scoring import read_references

    first = RunDir(next(iter(runs.values())))
    test_file = data_dir / first.config().corpus_name / "test.tsv"
    sources, references = read_references(test_file)
    machine = dataclasses.asdict(machine_description())
    report: dict = {"machine": machine, "test_file": str(test_file), "points": []}
    with tempfile.TemporaryDirectory() as scratch:
        for label, run_dir in runs.items():
            log(f"frontier: exporting {label} ({run_dir}) …")
            model = export_run_for_serving(
                run_dir, Path(scratch) / label, data_dir, exports=exports, score=False
            )
            for name in exports:
                log(f"frontier: measuring {label} {name} …")
                figures = measure_translate(
                    export_translate(Path(scratch) / label / name), sources, references, BATCH_1_SENTENCES
                )
                point = {"model": label, "run": str(run_dir), "export": name, "parameters": model.parameters}
                report["points"].append({**point, **figures})
                log(json.dumps(report["points"][-1]))
        if tutorial_export is None and tutorial_steps:
            log(f"frontier: training the TensorFlow tutorial's model for {tutorial_steps} steps …")
            tutorial_export = Path(scratch) / TUTORIAL / "export"
            tutorial_export.parent.mkdir()
            trained = train_tutorial(first.path, data_dir, tutorial_steps, tutorial_export, quick)
            keys = ("steps", "train_pairs", "train_examples_per_s", "units", "cpu")
            report["tutorial"] = {key: trained[key] for key in keys}
        if tutorial_export is not None:
            translate, parameters = tutorial_translate(tutorial_export)
            report.setdefault("tutorial", {"export": str(tutorial_export)})["parameters"] = parameters
            figures = measure_translate(translate, sources, references, BATCH_1_SENTENCES)
            point = {"model": TUTORIAL, "run": None, "export": "greedy", "parameters": parameters}
            report["points"].append({**point, **figures})
            log(json.dumps(report["points"][-1]))
    return report


def format_frontier(report: dict) -> list[str]:
    """A Markdown table, each point's speed also as a ratio to the tutorial's (where measured)."""
    tutorial = next((point for point in report["points"] if point["model"] == TUTORIAL), None)
    lines = [
        "| model | export | parameters | BLEU (± 95 %) | sentences/s, batch 64 | batch 1, p50 ms |"
        + (" × tutorial: sentences/s, p50, BLEU |" if tutorial else ""),
        "| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if tutorial else ""),
    ]
    for point in report["points"]:
        line = (
            f"| {point['model']} | {point['export']} | {point['parameters']:,} | "
            f"{point['bleu']:.2f} ± {point['bleu_ci95']:.2f} | {point['sentences_per_s_batch64']:,.0f} | "
            f"{point['ms_batch1_p50']:.1f} |"
        )
        if tutorial:
            speed = point["sentences_per_s_batch64"] / tutorial["sentences_per_s_batch64"]
            latency = point["ms_batch1_p50"] / tutorial["ms_batch1_p50"]
            quality = point["bleu"] / tutorial["bleu"] if tutorial["bleu"] else float("nan")
            line += f" {speed:.2f} / {latency:.2f} / {quality:.2f} |"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m app.bench.frontier", description=description)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR: trained runs (the first one's test split)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where the splits are")
    parser.add_argument(
        "--tutorial-steps", type=int, default=0, help="train the tutorial's model this long (0: leave it out)"
    )
    parser.add_argument(
        "--exports",
        default=",".join(FRONTIER_EXPORTS),
        help="of " + ", ".join(name for name, *_ in SERVING_EXPORTS),
    )
    parser.add_argument(
        "--tutorial-export",
        type=Path,
        default=None,
        help="measure this tutorial export (from python -m app.bench tutorial) instead of training one",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny tutorial model (GRU 32), for tests")
    parser.add_argument("--out", type=Path, default=Path("frontier.json"))
    parser.add_argument("--plot", type=Path, default=None, help="a PNG of BLEU against sentences/s")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, separator, folder = item.partition("=")
        if not separator or not label or not folder:
            parser.error(f"{item!r}: give each run as LABEL=RUN_DIR")
        runs[label] = Path(folder)
    exports = tuple(args.exports.split(","))
    unknown = sorted(set(exports) - {name for name, *_ in SERVING_EXPORTS})
    if unknown:
        parser.error(f"--exports: no export named {', '.join(unknown)}")
    report = measure_frontier(
        runs, args.data_dir, args.tutorial_steps, exports, args.quick, tutorial_export=args.tutorial_export
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(format_frontier(report)))
    if args.plot:
        from app.plots import frontier_plot

        frontier_plot(report["points"], args.plot)
    print(f"Wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
