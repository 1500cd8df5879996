"""`attend bench`: what training and serving cost on this machine, measured, seeded, in `bench.json`.

Each measurement runs in its own process (`python -m app.bench PHASE …`, `__main__.py`) so that its
peak RSS is its own and no precision policy or compiled function leaks between them:

- `train` (`training.py`): one (attention style, precision) pair: time to the first step,
  steady-state examples/s and target tokens/s (median over windows), achieved model FLOP/s against
  a float32 matmul peak measured in the same process, dev loss after the same number of steps,
  peak RSS.
- `serving-model` (`training.py`): a model of the same size trained for `BenchPlan.serving_steps`
  and exported (`SERVING_EXPORTS`: greedy and beam K=4, each plain, with `--xla` and with
  `--shortlist`): decoding costs what the outputs' lengths cost, and after the few timed steps a
  model emits only a word or two per sentence.
- `decode` (`decoding.py`): those SavedModels reloaded with `tf.saved_model.load`, as a serving
  program would, on sources bucketed by subword length (1–10, 11–20, 21–40) at batch 1, 8, 64 and
  256: sentences/s, target tokens/s, p50/p90 latency, first-call time, a shortlist export's
  candidates per batch, and what this host allows (`host.py`: the matmul peak and batch-1
  weight-streaming rate measured in that process).
- `serve` (`serving.py`, driving `load_test.py`): the greedy SavedModel served by `attend serve` (a
  subprocess on loopback, whose peak RSS is its own), with dynamic batching and without, under 1, 8
  and 64 concurrent clients each sending one of the decode phase's short sentences per REST
  request: requests/s, p50/p90/p99 latency, mean merged batch, errors; against the offline batch-64
  throughput of the same export.
- `prepare` (`prepare.py`): what `attend prepare` costs as the corpus grows.
- `tutorial` (`tutorial.py`): the TensorFlow NMT tutorial's model, re-implemented, trained on the
  same pairs, exported, timed by the decode phase's harness on the same sentences and scored on the
  same test sentences as Attend's greedy export: the figures every "× the tutorial" divides by.

`suite.py` runs them and gathers their parts into a `BenchReport` (`report.py`: one dataclass per
part, written as bench.json's keys); `targets.py` sets the figures against the TensorFlow
tutorial's measured in the same run, each with this host's bound, and `table.py` prints the whole.
"""

from app.bench.plan import QUICK_PLAN, BenchPlan
from app.bench.report import BenchReport
from app.bench.suite import run_bench, run_prepare_bench

__all__ = ["QUICK_PLAN", "BenchPlan", "BenchReport", "run_bench", "run_prepare_bench"]
