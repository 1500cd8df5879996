"""`attend bench`: every phase in its own process (`python -m app.bench PHASE …`), their parts
gathered into one `BenchReport`, written as `bench.json` and printed as a table; the TensorFlow
tutorial's model is trained and timed in the same run, after Attend's, on the same sentences."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from app.bench.decoding import bucket_sources
from app.bench.host import machine_description
from app.bench.plan import QUICK_OVERRIDES, plan_for
from app.bench.prepare import (
    PREPARE_SIZES,
    QUICK_PREPARE_OVERRIDES,
    QUICK_PREPARE_SIZES,
    format_prepare,
    prepare_curve,
)
from app.bench.report import (
    BenchReport,
    DecodeReport,
    PrepareCurve,
    PreparePoint,
    ServeReport,
    ServingModel,
    TokenLimits,
    TrainRow,
    TutorialReport,
)
from app.bench.serving import SERVE_EXPORT, serve_goals
from app.bench.table import format_table
from app.bench.targets import headline_figures, targets
from app.bench.training import choose_token_limits, export_run_for_serving, training_variants
from app.processes import run_python_for_json

SOURCES = "sources.json"  # the bucketed sentences every decoding phase times, in the scratch folder


@dataclasses.dataclass(frozen=True)
class Phases:
    """Runs each phase in a fresh interpreter with the bench's setting, and reads its part back."""

    preset: str
    data_dir: Path
    quick: bool
    overrides: list[str]

    def _run(self, arguments: list[str]) -> dict:
        return run_python_for_json(["-m", "app.bench", *arguments], f"bench phase {arguments[:3]}")

    def _setting(self, *extra: str) -> list[str]:
        sets = [f"--set={override}" for override in (*self.overrides, *extra)]
        return ["--preset", self.preset, "--data-dir", str(self.data_dir), *self._quick(), *sets]

    def _quick(self) -> list[str]:
        return ["--quick"] if self.quick else []

    def train(self, settings: list[str]) -> TrainRow:
        return TrainRow(**self._run(["train", *self._setting(*settings)]))

    def serving_model(self, export_dir: Path) -> ServingModel:
        return ServingModel(**self._run(["serving-model", *self._setting(), "--export-dir", str(export_dir)]))

    def decode(self, export_dir: Path, sources: Path) -> DecodeReport:
        arguments = ["decode", "--export-dir", str(export_dir), "--sources", str(sources), *self._quick()]
        return DecodeReport.from_json(self._run(arguments))

    def serve(self, export_dir: Path, sources: Path) -> ServeReport:
        arguments = ["serve", "--export-dir", str(export_dir), "--sources", str(sources), *self._quick()]
        return ServeReport.from_json(self._run(arguments))

    def tutorial(self, export_dir: Path, sources: Path, test_file: Path) -> TutorialReport:
        arguments = ["tutorial", *self._setting(), "--export-dir", str(export_dir), "--sources", str(sources)]
        return TutorialReport.from_json(self._run([*arguments, "--test-file", str(test_file)]))

    def prepare(self, pairs: int) -> PreparePoint:
        """One point of the `prepare` curve (not `--quick`: its sample is cut by an override instead)."""
        extra = QUICK_PREPARE_OVERRIDES if self.quick else ()
        sets = [f"--set={override}" for override in (*self.overrides, *extra)]
        setting = ["--preset", self.preset, "--data-dir", str(self.data_dir)]
        return PreparePoint(**self._run(["prepare", *setting, "--pairs", str(pairs), *sets]))


def run_bench(
    preset: str,
    overrides: list[str],
    quick: bool,
    output: Path,
    data_dir: Path,
    log=print,
    serve_run: Path | None = None,
) -> BenchReport:
    """All phases, each in its own process; prints a table and writes `output` (JSON).

    Decoding is timed on `serve_run`'s trained model when given, else on a bench-preset model
    trained for `BenchPlan.serving_steps`."""
    from app.config import load_config

    overrides = [*(QUICK_OVERRIDES if quick else ()), *overrides]
    pairs = token_limits(preset, overrides, data_dir, log)
    overrides += [f"train.max_source_tokens={pairs.max_source_tokens}"]
    overrides += [f"train.max_target_tokens={pairs.max_target_tokens}"]
    config = load_config(preset, overrides)
    phases = Phases(preset, data_dir, quick, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        train = {}
        for key, settings in training_variants(quick):
            log(f"bench: training {key} …")
            train[key] = phases.train(settings)
        serve_model, corpus_dir = export_serving_model(phases, Path(scratch), config, serve_run, log)
        decode, serve = decode_and_serve(phases, Path(scratch), corpus_dir, log)
        log(f"bench: the TensorFlow tutorial's model ({plan_for(quick).tutorial_steps} steps), timed …")
        tutorial = phases.tutorial(
            Path(scratch) / "tutorial", Path(scratch) / SOURCES, corpus_dir / "test.tsv"
        )
    report = BenchReport(
        machine=machine_description(),
        preset=preset,
        overrides=overrides,
        quick=quick,
        pairs=pairs,
        train=train,
        config=config.to_dict(),
        serve_model=serve_model,
        decode=decode,
        serve=serve,
        prepare=prepare_scale(phases, log),
        headline=headline_figures(train, decode),
        targets=targets(train, decode, tutorial, serve_model),
        tutorial=tutorial,
    )
    output.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    log(format_table(report))
    log(f"Wrote {output}")
    return report


def token_limits(preset: str, overrides: list[str], data_dir: Path, log=print) -> TokenLimits:
    """Prepares the corpus (once, before the timed processes) and chooses the length limits."""
    from app.config import load_config
    from app.data.prepare import prepare_data

    config = load_config(preset, overrides)
    pairs = choose_token_limits(config, prepare_data(config, data_dir, log=log))
    log(
        f"bench: pairs of at most {pairs.max_source_tokens} source / {pairs.max_target_tokens} target "
        f"tokens: {pairs.train_pairs:,} of {pairs.train_pairs_before_filter:,} train, "
        f"{pairs.dev_pairs:,} of {pairs.dev_pairs_before_filter:,} dev"
    )
    return pairs


def export_serving_model(
    phases: Phases, export_dir: Path, config, serve_run: Path | None, log=print
) -> tuple[ServingModel, Path]:
    """The `SERVING_EXPORTS` of the model decoding is timed on (`serve_run`'s, else the bench model
    trained in its own process) in `export_dir`, and the corpus folder its sources are drawn from."""
    from app.run import RunDir

    if serve_run is not None:
        bleu_sentences = plan_for(phases.quick).bleu_sentences
        serve_model = export_run_for_serving(serve_run, export_dir, phases.data_dir, bleu_sentences)
        return serve_model, phases.data_dir / RunDir(serve_run).config().corpus_name
    log(f"bench: training the decoding model ({plan_for(phases.quick).serving_steps} steps) …")
    return phases.serving_model(export_dir), phases.data_dir / config.corpus_name


def decode_and_serve(
    phases: Phases, export_dir: Path, corpus_dir: Path, log=print
) -> tuple[DecodeReport, ServeReport]:
    """The decode and serve phases on `export_dir`'s SavedModels, over the same bucketed sources;
    the serve phase's goals set against the decode phase's offline figures."""
    sources = bucket_sources(corpus_dir, export_dir / SERVE_EXPORT / "assets" / "source.model")
    sources_file = export_dir / SOURCES
    sources_file.write_text(json.dumps(sources, ensure_ascii=False))
    log("bench: decoding with the reloaded SavedModels, by source length and batch size …")
    decode = phases.decode(export_dir, sources_file)
    log("bench: serving the greedy SavedModel under load (attend serve, batching on and off) …")
    serve = phases.serve(export_dir, sources_file)
    return decode, dataclasses.replace(serve, goals=serve_goals(serve, decode))


def prepare_scale(phases: Phases, log=print, sizes: tuple[int, ...] | None = None) -> PrepareCurve:
    """The `prepare` phase at each size (`PREPARE_SIZES`, or the quick ones), one process each."""
    points = []
    for pairs in sizes or (QUICK_PREPARE_SIZES if phases.quick else PREPARE_SIZES):
        log(f"bench: attend prepare on {pairs:,} recombined pairs …")
        points.append(phases.prepare(pairs))
    return prepare_curve(points)


def run_prepare_bench(
    preset: str,
    overrides: list[str],
    quick: bool,
    output: Path,
    data_dir: Path,
    log=print,
    sizes: tuple[int, ...] | None = None,
) -> dict:
    """Only the `prepare` scale curve (what `attend bench` adds at its end), written to `output`."""
    overrides = [*(QUICK_OVERRIDES if quick else ()), *overrides]
    curve = prepare_scale(Phases(preset, data_dir, quick, overrides), log, sizes)
    machine = dataclasses.asdict(machine_description())
    report = {"machine": machine, "preset": preset, "overrides": overrides, "prepare": curve.to_json()}
    output.write_text(json.dumps(report, indent=2) + "\n")
    log("\n".join(format_prepare(curve)))
    log(f"Wrote {output}")
    return report
