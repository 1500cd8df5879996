"""`python -m app.bench PHASE …`: one phase of `attend bench` in its own process (see `app.bench`);
its part of the report printed as one JSON line for `app.bench.suite.Phases` to read back."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from app.bench.decoding import bucket_sources, run_decode_phase
from app.bench.plan import plan_for
from app.bench.prepare import run_prepare_phase
from app.bench.serving import SERVE_CLIENTS, SERVE_EXPORT, run_serve_phase
from app.bench.training import SERVING_EXPORTS, run_serving_model_phase, run_train_phase
from app.bench.tutorial import run_tutorial_phase


def main(argv: list[str] | None = None) -> int:
    """`decode` and `serve` take the sentences of `--sources` (a JSON file: bucket → sentences; by
    default those of the preset's corpus); `decode` times the `--exports` folders of `--export-dir`;
    `serve` also takes `--clients 1,8,64` and `--server-settings` (JSON: label → `attend serve` flags,
    e.g. '{"t0": ["--batch_timeout_micros=0"]}'), to try batching knobs; `prepare` times `attend
    prepare` on `--pairs` pairs recombined from the preset's corpus (in `--work-dir`); `tutorial`
    trains the TensorFlow tutorial's model on the preset's pairs, exports it to `--export-dir`, times it
    on `--sources` and scores it on `--test-file` (`--steps`: train it this long instead of
    the plan's `tutorial_steps`)."""
    parser = argparse.ArgumentParser(prog="python -m app.bench")
    parser.add_argument("phase", choices=("train", "serving-model", "decode", "serve", "prepare", "tutorial"))
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--export-dir", type=Path, default=None)
    parser.add_argument("--exports", default=",".join(name for name, *_ in SERVING_EXPORTS))
    parser.add_argument("--sources", type=Path, default=None)
    parser.add_argument(
        "--test-file", type=Path, default=None, help="tutorial: the TSV its BLEU is scored on"
    )
    parser.add_argument("--clients", default=",".join(map(str, SERVE_CLIENTS)))
    parser.add_argument("--server-settings", default=None)
    parser.add_argument("--pairs", type=int, default=100_000, help="prepare: pairs to generate")
    parser.add_argument("--work-dir", type=Path, default=None, help="prepare: scratch folder (default: temp)")
    parser.add_argument(
        "--steps", type=int, default=None, help="tutorial: its training steps (default: the plan's)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="section.key=value")
    args = parser.parse_args(argv)
    print(json.dumps(run_phase(args)))
    return 0


def run_phase(args: argparse.Namespace) -> dict:
    """The phase's part of the report, as JSON."""
    from app.config import load_config

    plan, config = plan_for(args.quick), load_config(args.preset, args.overrides)
    if args.phase == "prepare":
        return dataclasses.asdict(run_prepare_phase(config, args.data_dir, args.pairs, args.work_dir))
    if args.phase == "serving-model":
        return run_serving_model_phase(config, args.data_dir, plan, args.export_dir).to_json()
    if args.phase == "train":
        return dataclasses.asdict(run_train_phase(config, args.data_dir, plan))
    if args.sources:
        sources = json.loads(args.sources.read_text())
    else:
        model = args.export_dir / SERVE_EXPORT / "assets" / "source.model"
        sources = bucket_sources(args.data_dir / config.corpus_name, model)
    if args.phase == "tutorial":
        plan = dataclasses.replace(plan, serving_steps=args.steps) if args.steps else plan
        test_file = args.test_file or args.data_dir / config.corpus_name / "test.tsv"
        return run_tutorial_phase(config, args.data_dir, plan, sources, test_file, args.export_dir).to_json()
    if args.phase == "decode":
        return run_decode_phase(args.export_dir, tuple(args.exports.split(",")), sources, plan).to_json()
    clients = tuple(int(count) for count in args.clients.split(","))
    settings = json.loads(args.server_settings) if args.server_settings else None
    return run_serve_phase(args.export_dir, sources["short"][:64], plan, clients, settings).to_json()


if __name__ == "__main__":
    raise SystemExit(main())
