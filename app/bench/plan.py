"""How long each bench measurement runs: the full plan, and `--quick`'s (a tiny model and few steps,
which checks the report's shape, not the speed)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    """Steps, calls and requests of each phase (`QUICK_PLAN` for `--quick`)."""

    warmup_steps: int = 30
    windows: int = 5
    window_steps: int = 20
    dev_batches: int = 10
    latency_calls: int = 30  # batch-1 calls per bucket and export
    decode_sentences: int = 512  # sentences per bucket, export and larger batch size …
    decode_min_calls: int = 2  # … in at least this many calls
    serving_steps: int = 800  # training steps of the model decoding is timed on
    load_requests: int = 6000  # per server setting and number of clients, at most …
    load_seconds: float = 20.0  # … and within this time
    load_warmup: int = 64  # unrecorded requests before (at least two per client)
    bleu_sentences: int | None = None  # test sentences Attend's and the tutorial's BLEU score (None: all)
    tutorial_units: int = 256  # the TensorFlow tutorial's model: its size …
    tutorial_vocab: int = 5000  # … and its vocabularies' (trained for `tutorial_steps`)
    # the serve phase's version swaps: which exports, under how many clients (each swap replays
    # its version's warm-up: minutes for an --xla export's compiled shapes on 2 cores)
    swap_exports: tuple[str, ...] = ("greedy", "greedy_xla")
    swap_clients: tuple[int, ...] = (8, 64)

    @property
    def tutorial_steps(self) -> int:
        """As many as the model decoding is timed on (their BLEU compares at equal steps), and at
        least the timed windows of its training rate."""
        return max(self.serving_steps, self.warmup_steps + self.windows * self.window_steps)


QUICK_PLAN = BenchPlan(
    warmup_steps=3,
    windows=2,
    window_steps=3,
    dev_batches=2,
    latency_calls=3,
    decode_sentences=16,
    decode_min_calls=1,
    serving_steps=5,
    load_requests=64,  # at least one request per client at 64 clients
    load_seconds=1.5,
    load_warmup=8,
    bleu_sentences=64,
    tutorial_units=32,
    tutorial_vocab=500,
    swap_exports=("greedy",),
    swap_clients=(8,),
)
# `--quick`'s model: small enough that every phase runs in seconds
QUICK_OVERRIDES = (
    "model.embedding_dim=32",
    "model.units=32",
    "model.attention_units=32",
    "model.readout_units=32",
    "tokenizer.source_vocab_size=500",
    "tokenizer.target_vocab_size=500",
)


def plan_for(quick: bool) -> BenchPlan:
    return QUICK_PLAN if quick else BenchPlan()
