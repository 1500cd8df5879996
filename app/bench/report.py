"""The shape of `bench.json`, in memory: one frozen dataclass per part of the report.

Each phase's process returns its part as JSON (`to_json`), the parent reads it back (`from_json`),
and `BenchReport.to_json` writes the file: the same keys and nesting as the reports in `docs/`
that scripts and the README's tables read. Figures a part derives from its own fields (a target's
verdict, a decode row's batch-64 rate) are computed, not stored, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Json = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Machine:
    cpus: int | None
    processor: str
    python: str
    tensorflow: str


@dataclasses.dataclass(frozen=True)
class TokenLimits:
    """The length limits the bench trains with, and the pairs they keep of each split."""

    max_source_tokens: int
    max_target_tokens: int
    train_pairs: int
    dev_pairs: int
    train_pairs_before_filter: int
    dev_pairs_before_filter: int


@dataclasses.dataclass(frozen=True)
class TrainRow:
    """The `train` phase of one (attention style, precision) pair."""

    time_to_first_step_s: float
    train_examples_per_s: float
    train_target_tokens_per_s: float
    mean_source_tokens: float
    mean_target_tokens: float
    model_gflop_per_example: float
    achieved_gflops: float
    matmul_peak_gflops: float
    utilization: float
    steps: int
    dev_loss_after_steps: float
    parameters: int
    step_breakdown_ms: dict[str, float]  # `app.models.cost.step_breakdown`: part → ms
    peak_rss_mb: float


@dataclasses.dataclass(frozen=True)
class ServingModel:
    """The model decoding is timed on: a trained run (`run`, with its sizes), or the bench model
    trained for a few steps (`run` None, with a note, its steps and dev loss); and the BLEU of its
    greedy export on the test sentences the tutorial is scored on (None in older reports)."""

    run: str | None
    note: str | None = None
    steps: int | None = None
    dev_loss: float | None = None
    parameters: int | None = None
    source_vocab: int | None = None
    target_vocab: int | None = None
    bleu: float | None = None
    bleu_sentences: int | None = None

    def to_json(self) -> Json:
        figures = dataclasses.asdict(self)
        return {"run": self.run, **{key: value for key, value in figures.items() if value is not None}}


# === The decode phase ===
@dataclasses.dataclass(frozen=True)
class Bucket:
    """The sources of one length bucket: its bounds in subword tokens (inclusive) and their means."""

    source_tokens: tuple[int | None, int | None]
    sentences: int
    mean_source_tokens: float
    mean_source_words: float

    def to_json(self) -> Json:
        return {**dataclasses.asdict(self), "source_tokens": list(self.source_tokens)}

    @classmethod
    def from_json(cls, data: Json) -> Bucket:
        return cls(**{**data, "source_tokens": tuple(data["source_tokens"])})


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """One reloaded SavedModel: load and first-call times, and the sizes its bounds are counted from."""

    load_s: float
    first_call_s: float
    target_vocab: int
    model: Json | None = None  # the model section of its config, from its model card

    def to_json(self) -> Json:
        figures = dataclasses.asdict(self)
        return figures if self.model is not None else {k: v for k, v in figures.items() if k != "model"}


@dataclasses.dataclass(frozen=True)
class BatchSpeed:
    calls: int
    sentences_per_s: float
    target_tokens_per_s: float
    mean_output_tokens: float
    latency_ms_p50: float
    latency_ms_p90: float
    warmup_s: float


@dataclasses.dataclass(frozen=True)
class DecodeSpeed:
    """One export on one bucket, at each batch size (`"1"`, `"8"`, …); a shortlist export also has
    its mean candidates per batch (`"1"`, `"64"`)."""

    batches: dict[str, BatchSpeed]
    mean_candidates: dict[str, float] | None = None

    @property
    def sentences_per_s_batch64(self) -> float:
        return self.batches["64"].sentences_per_s

    @property
    def latency_ms_batch1_p50(self) -> float:
        return self.batches["1"].latency_ms_p50

    @property
    def latency_ms_batch1_p90(self) -> float:
        return self.batches["1"].latency_ms_p90

    def to_json(self) -> Json:
        data = {
            "batches": {size: dataclasses.asdict(speed) for size, speed in self.batches.items()},
            # the figures `serve_goals` and earlier reports read
            "sentences_per_s_batch64": self.sentences_per_s_batch64,
            "latency_ms_batch1_p50": self.latency_ms_batch1_p50,
            "latency_ms_batch1_p90": self.latency_ms_batch1_p90,
        }
        return data if self.mean_candidates is None else {**data, "mean_candidates": self.mean_candidates}

    @classmethod
    def from_json(cls, data: Json) -> DecodeSpeed:
        batches = {size: BatchSpeed(**speed) for size, speed in data["batches"].items()}
        return cls(batches, data.get("mean_candidates"))


@dataclasses.dataclass(frozen=True)
class DecodeReport:
    """The decode phase: buckets, exports, a speed per (export, bucket) — `EXPORT_BUCKET` in JSON —
    and the host's rates measured in the same process (None in reports older than the bounds)."""

    buckets: dict[str, Bucket]
    exports: dict[str, ExportInfo]
    speeds: dict[tuple[str, str], DecodeSpeed]
    peak_rss_mb: float
    matmul_peak_gflops: float | None = None
    matvec_gbytes_per_s: float | None = None

    def speed(self, export: str | None, bucket: str) -> DecodeSpeed | None:
        return self.speeds.get((export or "", bucket))

    def to_json(self) -> Json:
        return {
            "buckets": {name: bucket.to_json() for name, bucket in self.buckets.items()},
            "exports": {name: info.to_json() for name, info in self.exports.items()},
            **{f"{export}_{bucket}": speed.to_json() for (export, bucket), speed in self.speeds.items()},
            "peak_rss_mb": self.peak_rss_mb,
            "matmul_peak_gflops": self.matmul_peak_gflops,
            "matvec_gbytes_per_s": self.matvec_gbytes_per_s,
        }

    @classmethod
    def from_json(cls, data: Json) -> DecodeReport:
        speeds = {
            tuple(key.rsplit("_", 1)): DecodeSpeed.from_json(value)  # bucket names hold no "_"
            for key, value in data.items()
            if isinstance(value, dict) and "batches" in value
        }
        return cls(
            buckets={name: Bucket.from_json(bucket) for name, bucket in data["buckets"].items()},
            exports={name: ExportInfo(**info) for name, info in data["exports"].items()},
            speeds=speeds,
            peak_rss_mb=data["peak_rss_mb"],
            matmul_peak_gflops=data.get("matmul_peak_gflops"),
            matvec_gbytes_per_s=data.get("matvec_gbytes_per_s"),
        )


# === The serve phase ===
@dataclasses.dataclass(frozen=True)
class LoadRow:
    """One number of clients against one server (`load_test.load_summary`, and the mean merged
    batch read from the server's metrics; None without batching)."""

    clients: int
    requests: int
    errors: int
    error_statuses: dict[str, int]
    seconds: float
    requests_per_s: float
    latency_ms_p50: float | None
    latency_ms_p90: float | None
    latency_ms_p99: float | None
    latency_ms_max: float | None
    mean_batch_size: float | None


@dataclasses.dataclass(frozen=True)
class ServerRun:
    """One `attend serve` process (its flags) under each number of clients."""

    flags: list[str]
    load: list[LoadRow]
    startup_s: float
    peak_rss_mb: float | None
    exit_status: int | None

    def row(self, clients: int) -> LoadRow:
        return next(row for row in self.load if row.clients == clients)

    @classmethod
    def from_json(cls, data: Json) -> ServerRun:
        return cls(**{**data, "load": [LoadRow(**row) for row in data["load"]]})


@dataclasses.dataclass(frozen=True)
class ServeGoals:
    """The serve phase at its most clients against the goals (`app.bench.serving.serve_goals`)."""

    clients: int
    offline_sentences_per_s_batch64: float
    requests_per_s: float
    ratio_to_offline_batch64: float
    throughput_goal: float
    throughput_goal_met: bool
    offline_latency_ms_batch1_p50: float
    latency_ms_p99: float | None
    p99_limit_ms: float
    p99_goal_met: bool
    mean_latency_ms_at_throughput_goal: float
    no_batching_requests_per_s: float
    batching_speedup: float
    batching_goal: float
    batching_goal_met: bool
    errors: int


@dataclasses.dataclass(frozen=True)
class SwapRow:
    """A version swapped in under load (`app.bench.serving.swap_under_load`): from its publication to
    AVAILABLE (its warm-up included, `warmup_s`), then the latency of the first `first_requests`
    requests it answers and of as many right after (steady state), with `clients` closed-loop clients.
    `warm_up`: the version carried its warm-up records (else the same export without them)."""

    export: str
    warm_up: bool
    clients: int
    seconds_to_available: float
    warmup_s: float | None
    first_requests: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    steady_latency_ms_p50: float | None
    steady_latency_ms_p99: float | None
    errors: int

    @property
    def p99_to_steady(self) -> float | None:
        """The first requests' p99 over steady state's (the issue's goal: at most 1.5)."""
        if self.latency_ms_p99 is None or not self.steady_latency_ms_p99:
            return None
        return round(self.latency_ms_p99 / self.steady_latency_ms_p99, 2)

    def to_json(self) -> Json:
        return {**dataclasses.asdict(self), "p99_to_steady": self.p99_to_steady}


@dataclasses.dataclass(frozen=True)
class ServeReport:
    """The serve phase: each server setting (label → its run), the goals once the decode phase's
    offline figures are known (`{}` in JSON while they are not, or without both settings), and the
    version swaps with and without warm-up (absent from reports from before they were measured)."""

    export: str
    sentences: int
    mean_source_words: float
    max_requests: int
    max_seconds: float
    servers: dict[str, ServerRun]
    goals: ServeGoals | None = None
    swaps: list[SwapRow] = dataclasses.field(default_factory=list)

    def to_json(self) -> Json:
        written = {
            **dataclasses.asdict(self),
            "goals": {} if self.goals is None else dataclasses.asdict(self.goals),
            "swaps": [swap.to_json() for swap in self.swaps],
        }
        if not self.swaps:  # a report from before swaps were measured reads back to the same text
            del written["swaps"]
        return written

    @classmethod
    def from_json(cls, data: Json) -> ServeReport:
        goals = data.get("goals")
        servers = {label: ServerRun.from_json(server) for label, server in data["servers"].items()}
        swaps = [
            SwapRow(**{key: value for key, value in swap.items() if key != "p99_to_steady"})
            for swap in data.get("swaps", [])
        ]
        return cls(
            **{**data, "servers": servers, "goals": ServeGoals(**goals) if goals else None, "swaps": swaps}
        )


# === The prepare phase ===
@dataclasses.dataclass(frozen=True)
class PreparePoint:
    """`attend prepare` on one number of recombined pairs (`app.bench.prepare.run_prepare_phase`)."""

    pairs: int
    generated_mb: float
    generate_seconds: float
    seconds: float  # the corpus step and the tokenizers
    corpus_seconds: float
    tokenizer_seconds: float
    peak_rss_mb_after_corpus: float
    shards: int
    splits: dict[str, int]
    duplicates: int
    unique: int
    bad: int
    tokenizer_sample: int
    peak_rss_mb: float

    @property
    def seconds_per_million(self) -> float:
        return round(self.seconds / self.pairs * 1e6, 2)

    @property
    def corpus_seconds_per_million(self) -> float:
        return round(self.corpus_seconds / self.pairs * 1e6, 2)

    def to_json(self) -> Json:
        return {
            **dataclasses.asdict(self),
            "seconds_per_million": self.seconds_per_million,
            "corpus_seconds_per_million": self.corpus_seconds_per_million,
        }

    @classmethod
    def from_json(cls, data: Json) -> PreparePoint:
        derived = ("seconds_per_million", "corpus_seconds_per_million")
        return cls(**{key: value for key, value in data.items() if key not in derived})


@dataclasses.dataclass(frozen=True)
class PrepareGoals:
    """Linear growth (the corpus step; the whole for comparison) and peak RSS at the largest point."""

    largest_pairs: int
    reference_pairs: int
    corpus_per_pair_ratio: float
    total_per_pair_ratio: float
    linear_tolerance: float
    linear_goal_met: bool
    total_linear_within_tolerance: bool
    peak_rss_mb: float
    rss_goal_mb: int
    rss_goal_met: bool


@dataclasses.dataclass(frozen=True)
class PrepareCurve:
    """The points by size, and their goals (`{}` in JSON with fewer than two points)."""

    points: list[PreparePoint]
    goals: PrepareGoals | None

    def to_json(self) -> Json:
        goals = {} if self.goals is None else dataclasses.asdict(self.goals)
        return {"points": [point.to_json() for point in self.points], "goals": goals}

    @classmethod
    def from_json(cls, data: Json) -> PrepareCurve:
        goals = data.get("goals")
        points = [PreparePoint.from_json(point) for point in data["points"]]
        return cls(points, PrepareGoals(**goals) if goals else None)


# === The tutorial phase ===
@dataclasses.dataclass(frozen=True)
class Cpu:
    """The CPU the run's ratios hold for: its model name, which of `host.CPU_FLAGS` it has, and the
    float32 matmul peak measured in the tutorial phase's process."""

    model: str
    flags: list[str]
    matmul_peak_gflops: float


@dataclasses.dataclass(frozen=True)
class TutorialReport:
    """The TensorFlow tutorial's model (`app.bench.tutorial`) trained on the bench's pairs, exported,
    reloaded and timed by the decode phase's harness on the same buckets, and scored on the same
    test sentences as Attend's greedy export. Its headline figures (the short bucket's batch-64
    rate and batch-1 p50) are read from `decode`, not stored; JSON writes them first."""

    train_examples_per_s: float
    bleu: float
    bleu_sentences: int
    cpu: Cpu
    steps: int
    train_pairs: int
    time_to_first_step_s: float
    parameters: int
    source_vocab: int
    target_vocab: int
    units: int
    decode: dict[str, DecodeSpeed]  # bucket → speed of the reloaded export
    peak_rss_mb: float

    HEADLINE_BUCKET = "short"  # Attend's headline figures are the short bucket's too

    @property
    def greedy_b64_sentences_per_s(self) -> float:
        return self.decode[self.HEADLINE_BUCKET].sentences_per_s_batch64

    @property
    def greedy_b1_p50_ms(self) -> float:
        return self.decode[self.HEADLINE_BUCKET].latency_ms_batch1_p50

    def to_json(self) -> Json:
        figures = dataclasses.asdict(self)
        return {
            "greedy_b64_sentences_per_s": self.greedy_b64_sentences_per_s,
            "greedy_b1_p50_ms": self.greedy_b1_p50_ms,
            **figures,
            "decode": {bucket: speed.to_json() for bucket, speed in self.decode.items()},
        }

    @classmethod
    def from_json(cls, data: Json) -> TutorialReport:
        derived = ("greedy_b64_sentences_per_s", "greedy_b1_p50_ms")
        figures = {key: value for key, value in data.items() if key not in derived}
        decode = {bucket: DecodeSpeed.from_json(speed) for bucket, speed in data["decode"].items()}
        return cls(**{**figures, "cpu": Cpu(**data["cpu"]), "decode": decode})


# === Targets ===
@dataclasses.dataclass(frozen=True)
class Bound:
    """What this host allows a target (`app.bench.targets.target_bounds`): a ceiling or a floor, and
    how it was counted."""

    value: float
    basis: str


@dataclasses.dataclass(frozen=True)
class Target:
    """A target: the figure, its goal, the tutorial's figure measured in the same run that the goal
    is a multiple of, this host's bound."""

    target: str
    value: float
    goal: float
    at_least: bool  # a rate to reach, or (False) a time to stay under
    tutorial: float | None = None
    bound: Bound | None = None

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    @property
    def reachable(self) -> bool:
        """Whether the arithmetic at this host's rate could meet the goal."""
        return self.bound.value >= self.goal if self.at_least else self.bound.value <= self.goal

    @property
    def share(self) -> float:
        """How close the figure comes to the bound: 1.0 would be the arithmetic at the host's rate."""
        return round(self.value / self.bound.value if self.at_least else self.bound.value / self.value, 3)

    @property
    def ratio_to_tutorial(self) -> float | None:
        """The figure over the tutorial's (None where the tutorial's is 0, as a tiny model's BLEU)."""
        return round(self.value / self.tutorial, 3) if self.tutorial else None

    def to_json(self) -> Json:
        data = {
            "target": self.target,
            "value": self.value,
            "goal": self.goal,
            "at_least": self.at_least,
            "met": self.met,
        }
        if self.tutorial is not None:
            data |= {"tutorial": self.tutorial, "ratio_to_tutorial": self.ratio_to_tutorial}
        if self.bound:
            data["bound"] = {
                **dataclasses.asdict(self.bound),
                "reachable": self.reachable,
                "share": self.share,
            }
        return data

    @classmethod
    def from_json(cls, data: Json) -> Target:
        bound = data.get("bound")
        return cls(
            data["target"],
            data["value"],
            data["goal"],
            data["at_least"],
            data.get("tutorial"),
            Bound(bound["value"], bound["basis"]) if bound else None,
        )


@dataclasses.dataclass(frozen=True)
class Headline:
    """The figures scripts follow from run to run, at bench.json's top level (each search: the
    fastest of its plain, XLA and shortlist exports, named beside; None where not measured)."""

    decode_short_greedy_b64_sent_per_s: float | None
    decode_short_greedy_b64_export: str | None
    decode_short_greedy_b1_p50_ms: float | None
    decode_short_greedy_b1_export: str | None
    decode_short_beam4_over_greedy_b64: float | None
    train_bahdanau_best_examples_per_s: float | None


# === The whole ===
@dataclasses.dataclass(frozen=True)
class BenchReport:
    """`bench.json`: the setting, every phase's part, the headline figures and the targets
    (`tutorial` None in reports older than the tutorial phase, and then not written)."""

    machine: Machine
    preset: str
    overrides: list[str]
    quick: bool
    pairs: TokenLimits
    train: dict[str, TrainRow]  # "STYLE/PRECISION[/xla]" → its row
    config: Json  # the resolved config, as `Config.to_dict` writes it
    serve_model: ServingModel
    decode: DecodeReport
    serve: ServeReport
    prepare: PrepareCurve
    headline: Headline
    targets: list[Target]
    tutorial: TutorialReport | None = None

    def to_json(self) -> Json:
        return {
            "machine": dataclasses.asdict(self.machine),
            "preset": self.preset,
            "overrides": self.overrides,
            "quick": self.quick,
            "pairs": dataclasses.asdict(self.pairs),
            "train": {key: dataclasses.asdict(row) for key, row in self.train.items()},
            "config": self.config,
            "serve_model": self.serve_model.to_json(),
            "decode": self.decode.to_json(),
            "serve": self.serve.to_json(),
            "prepare": self.prepare.to_json(),
            **({} if self.tutorial is None else {"tutorial": self.tutorial.to_json()}),
            **dataclasses.asdict(self.headline),
            "targets": [target.to_json() for target in self.targets],
        }

    @classmethod
    def from_json(cls, data: Json) -> BenchReport:
        headline = {field.name: data[field.name] for field in dataclasses.fields(Headline)}
        return cls(
            machine=Machine(**data["machine"]),
            preset=data["preset"],
            overrides=data["overrides"],
            quick=data["quick"],
            pairs=TokenLimits(**data["pairs"]),
            train={key: TrainRow(**row) for key, row in data["train"].items()},
            config=data["config"],
            serve_model=ServingModel(**data["serve_model"]),
            decode=DecodeReport.from_json(data["decode"]),
            serve=ServeReport.from_json(data["serve"]),
            prepare=PrepareCurve.from_json(data["prepare"]),
            headline=Headline(**headline),
            targets=[Target.from_json(target) for target in data["targets"]],
            tutorial=TutorialReport.from_json(data["tutorial"]) if "tutorial" in data else None,
        )
