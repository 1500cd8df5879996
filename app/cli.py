"""`attend …` / `python -m app …`: parses the command line and calls one function per command."""

from __future__ import annotations

import argparse
import sys
import textwrap
import traceback
from pathlib import Path

from app.config import available_presets, load_config
from app.serve.options import BatchingOptions, Limits

DATA_DIR = Path("data")
EPILOG = "Overrides are section.key=value pairs, e.g. train.epochs=3 model.attention_style=luong."


def settings_epilog(preset: str) -> str:
    """The override syntax and every setting's effective value under `preset`: the config's
    defaults with the preset's own values (the one source of defaults is app/config.py)."""
    try:
        config = load_config(preset)
    except ValueError:
        return EPILOG
    lines = [EPILOG, "", f"Settings of the {preset!r} preset (config defaults and the preset's own values):"]
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            settings = " ".join(f"{section}.{key}={value}" for key, value in values.items())
            lines += textwrap.wrap(settings, width=100, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


class IntermixedParser(argparse.ArgumentParser):
    """A command's parser that takes options before, between or after its positionals, as people
    type them (`attend translate RUN --nbest 3 "Dios es amor."`): argparse's `parse_args` fills a
    `nargs="*"` positional only up to the first option and refuses what follows it."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # the two passes of parse_known_intermixed_args itself
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (batch sizes, beam widths)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _preset_given(argv: list[str]) -> str | None:
    """The `--preset` of the command line, read before parsing so that `--help` can show its settings."""
    for index, argument in enumerate(argv):
        if argument == "--preset" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--preset="):
            return argument.split("=", 1)[1]
    return None


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    presets = ", ".join(available_presets())
    parser.add_argument("--preset", default="default", help=f"config preset ({presets}) or a YAML file path")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where corpora are cached (default: data/)"
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def _add_run_commands(commands, preset: str) -> None:
    settings = {"epilog": settings_epilog(preset), "formatter_class": argparse.RawDescriptionHelpFormatter}
    prepare = commands.add_parser(
        "prepare", help="fetch the corpus, split it, fit the tokenizers", **settings
    )
    _add_config_arguments(prepare)
    monolingual = commands.add_parser(
        "monolingual",
        help="another Bible translation's verses, dev/test verses removed: text to back-translate",
        **settings,
    )
    monolingual.add_argument(
        "--bible", required=True, help="the translation's code, in the target language (e.g. 3 or k)"
    )
    monolingual.add_argument("--out", type=Path, required=True, help="the text file to write, a verse a line")
    _add_config_arguments(monolingual)
    train = commands.add_parser("train", help="prepare, train, keep the best model, export it", **settings)
    _add_config_arguments(train)
    train.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run folder (default: resume the newest unfinished models/<preset>-*/ run with these same "
        "settings, else a new models/<preset>-<timestamp>/)",
    )
    train.add_argument(
        "--no-export", action="store_true", help="train only; export later with `attend export`"
    )
    train.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="start from this trained run's best weights (fine-tuning, transfer; = train.init_from)",
    )
    train.add_argument(
        "--init-parts",
        choices=("all", "encoder", "decoder", "embeddings"),
        default=None,
        help="what --init-from reuses (default: all; = train.init_parts)",
    )
    train.add_argument(
        "--max-minutes",
        default=None,
        metavar="M",
        help="train as many epochs as fit in M minutes, at most train.epochs (= train.max_minutes)",
    )
    train.add_argument(
        "--profile", action="store_true", help="trace steps 10-20 with the TensorBoard profiler (Profile tab)"
    )
    export = commands.add_parser("export", help="(re-)export a trained run's SavedModel into RUN_DIR/export/")
    export.add_argument("run_dir", type=Path, help="the run folder (holds config.yaml, vocab/, checkpoints/)")
    export.add_argument(
        "--force",
        action="store_true",
        help="export the last good checkpoint of a run whose training failed (diverged)",
    )
    export.add_argument(
        "--model-base",
        type=Path,
        help="publish as the next version BASE/NAME/<N>/ of a TensorFlow Serving model base instead",
    )
    export.add_argument(
        "--name", help="the model's name in --model-base (default: its language pair, e.g. es-en)"
    )
    export.add_argument(
        "--xla",
        action="store_true",
        help="compile translate_ids, and serving_default for small batches, with XLA: about twice as fast "
        "at batch 1-8 on CPU (stock TF Serving then needs XLA: off by default)",
    )
    _add_shortlist_arguments(export)
    export.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the splits, for --shortlist (default: data/)"
    )
    members = export.add_mutually_exclusive_group()
    members.add_argument(
        "--ensemble",
        type=Path,
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="export an ensemble: these runs' best weights join RUN_DIR's, their log-probabilities averaged "
        "at every step (the same vocabularies required)",
    )
    members.add_argument(
        "--ensemble-last",
        type=positive_int,
        metavar="N",
        help="export an ensemble of RUN_DIR's last N kept epochs (train.keep_last_epochs)",
    )
    export.add_argument(
        "--out",
        type=Path,
        help="export into this folder instead of RUN_DIR/export/ (e.g. an ensemble beside it)",
    )


def _add_shortlist_arguments(parser: argparse.ArgumentParser) -> None:
    """`--shortlist` / `--no-shortlist` (default: the run's decode.shortlist) and where its train split is."""
    parser.add_argument(
        "--shortlist",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode over a per-batch shortlist of target pieces (faster, slightly lossy; learnt from the "
        "train split; sizes: decode.shortlist_frequent/_per_source); default: the run's decode.shortlist",
    )


def _add_use_commands(commands) -> None:
    translate = commands.add_parser("translate", help="translate sentences with an exported SavedModel")
    translate.add_argument("model", type=Path, help="a run folder or its export/ folder")
    translate.add_argument(  # default=[]: intermixed parsing would call an empty `*` positional missing
        "sentences", nargs="*", default=[], help="sentences to translate (default: lines from stdin)"
    )
    translate.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="sentences per call (default: 64; 1 when typing at a terminal, to answer each line at once)",
    )
    translate.add_argument(
        "--nbest",
        type=positive_int,
        default=None,
        metavar="K",
        help="the K best translations of the beam per sentence, as `index ||| translation ||| log-prob` "
        "lines (K at most the export's decode.beam_width)",
    )
    translate.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="also save attention heatmaps (OUT.png, then OUT-2.png, …)",
    )
    translate.add_argument(
        "--align",
        action="store_true",
        help="print `translation ||| alignment`: each target word's most attended source word, in Pharaoh "
        "format (`source-target` word indices, 0-based)",
    )
    translate.add_argument(
        "--prefix",
        default=None,
        metavar="TEXT",
        help="start every translation with TEXT and complete it (the `complete` signature; a TEXT ending "
        "inside a word is completed from its typed part)",
    )
    translate.add_argument(
        "--sample",
        action="store_true",
        help="draw each translation from the model instead of searching for the likeliest (back-translation)",
    )
    translate.add_argument(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help="with --sample: sharpen (< 1) or flatten (> 1) the distribution (default: the export's "
        "decode.sampling_temperature)",
    )
    translate.add_argument(
        "--topk",
        type=int,
        default=None,
        metavar="K",
        help="with --sample: draw from the K likeliest pieces only, 0 = all (default: decode.sampling_topk)",
    )
    translate.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --sample: the same seed gives the same translations (default: a random one)",
    )
    score = commands.add_parser(
        "score", help="log-probabilities of given translations (forced decoding): filter a corpus, rerank"
    )
    score.add_argument("model", type=Path, help="a run folder or its export/ folder")
    score.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        metavar="FILE.tsv",
        help="source<TAB>target lines (default or `-`: stdin); prints `total<TAB>normalised` per line",
    )
    score.add_argument("--batch-size", type=positive_int, default=64, help="pairs per call (default: 64)")
    _add_backtranslate_command(commands)
    evaluate = commands.add_parser("evaluate", help="sacreBLEU BLEU/chrF of a run on a split or a TSV file")
    evaluate.add_argument("run_dir", type=Path, help="the run folder")
    evaluate.add_argument("--split", default="test", choices=("train", "dev", "test"), help="default: test")
    evaluate.add_argument(
        "--beam", type=positive_int, default=None, help="beam width (default: the run's; 1 = greedy)"
    )
    evaluate.add_argument(
        "--source",
        type=Path,
        default=None,
        metavar="FILE.tsv",
        help="score any source<TAB>target file instead of a split",
    )
    evaluate.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where the splits are (default: data/)"
    )
    _add_shortlist_arguments(evaluate)
    average = commands.add_parser(
        "average", help="average the weights of a run's last epochs into a run folder of their own"
    )
    average.add_argument("run_dir", type=Path, help="the run folder (keeps train.keep_last_epochs epochs)")
    average.add_argument(
        "--last", type=positive_int, default=5, help="how many of the last kept epochs (default: 5)"
    )
    average.add_argument(
        "--out", type=Path, default=None, help="the new run folder (default: RUN_DIR-avgN beside it)"
    )
    compare = commands.add_parser("compare", help="BLEU by source length of several runs in one plot")
    compare.add_argument("run_dirs", type=Path, nargs="+", help="run folders trained on the same corpus")
    compare.add_argument("--out", type=Path, default=Path("bleu_by_length.png"), help="the PNG to write")
    compare.add_argument("--split", default="test", choices=("dev", "test"), help="default: test")
    compare.add_argument(
        "--beam", type=positive_int, default=1, help="beam width for every run (default: 1, greedy)"
    )
    compare.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where the splits are (default: data/)"
    )


def _add_backtranslate_command(commands) -> None:
    backtranslate = commands.add_parser(
        "backtranslate",
        help="translate target-language text with a reverse run into synthetic training pairs (resumable)",
    )
    backtranslate.add_argument(
        "model", type=Path, help="a run trained in the reverse direction (its folder or export/ folder)"
    )
    backtranslate.add_argument(
        "file",
        type=Path,
        metavar="MONOLINGUAL.txt",
        help="one sentence a line (`-`: stdin); blank lines skipped",
    )
    backtranslate.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="SYNTHETIC.tsv",
        help="synthetic_source<TAB>real_target lines; an existing file is continued where it stopped",
    )
    search = backtranslate.add_mutually_exclusive_group()
    search.add_argument(
        "--sample", action="store_true", help="draw each translation from the model (the export's sample)"
    )
    search.add_argument(
        "--beam",
        type=positive_int,
        default=None,
        metavar="K",
        help="beam search of width K (default: the export's serving_default, decode.beam_width)",
    )
    backtranslate.add_argument(
        "--temperature", type=float, default=None, metavar="T", help="with --sample (default: the export's)"
    )
    backtranslate.add_argument(
        "--topk", type=int, default=None, metavar="K", help="with --sample, 0 = all (default: the export's)"
    )
    backtranslate.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --sample: batch b is drawn with SEED + b (default: 0, so that a restart draws the same)",
    )
    backtranslate.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="sentences per call (default: 64; keep it on resume)",
    )
    backtranslate.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the splits, for a --beam rebuilt with a shortlist"
    )


def _add_distill_command(commands, preset: str) -> None:
    distill = commands.add_parser(
        "distill",
        help="train a small student on a teacher run's beam translations of its train split (resumable)",
        description="The student's settings: the preset's, then the teacher's data section (data.weight =\n"
        "--references, data.corpora = the teacher's translations in TEACHER_RUN/distill/),\n"
        "then the overrides.",
        epilog=settings_epilog(preset),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    distill.add_argument("teacher", type=Path, metavar="TEACHER_RUN", help="a trained and exported run")
    distill.add_argument(
        "--preset",
        default="fast",
        help=f"the student's preset ({', '.join(available_presets())}; default: fast)",
    )
    distill.add_argument(
        "--beam",
        type=positive_int,
        default=None,
        metavar="K",
        help="the teacher's beam width (default: its decode.beam_width, the export's serving_default)",
    )
    distill.add_argument(
        "--references",
        type=float,
        default=0.0,
        metavar="W",
        help="data.weight of the references beside the teacher's translations (weight 1; default: 0, none)",
    )
    distill.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="sentences per teacher call (default: 64; keep it on resume)",
    )
    distill.add_argument(
        "--run-dir", type=Path, default=None, help="the student's run folder (default: as `attend train`)"
    )
    distill.add_argument("--no-export", action="store_true", help="train the student only")
    distill.add_argument(
        "--max-minutes", default=None, metavar="M", help="the student's time budget (= train.max_minutes)"
    )
    distill.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where the teacher's corpus is (default: data/)"
    )
    distill.add_argument("overrides", nargs="*", metavar="section.key=value", help="the student's overrides")


def _add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve SavedModels over TensorFlow Serving's REST and gRPC APIs, with a web page",
        description="Serves the latest version of BASE/NAME (or a run's export) with TensorFlow Serving's "
        "REST and gRPC APIs, dynamic batching, Prometheus metrics and a web page; new versions are "
        "picked up while serving.",
    )
    serve.add_argument(
        "run_dir", type=Path, nargs="?", help="serve this run's export/ (instead of a model base)"
    )
    serve.add_argument("--model-base", type=Path, help="the model base: BASE/NAME/<version>/ SavedModels")
    serve.add_argument("--model-name", help="the model to serve (default with RUN_DIR: its language pair)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--rest-port", type=port_number, default=8501, help="REST and page port (default 8501; 0 = any free)"
    )
    serve.add_argument(
        "--grpc-port", type=port_number, default=8500, help="gRPC port (default 8500; 0 = any free)"
    )
    serve.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to look for new versions (default 2; 0 = never)",
    )
    batching = serve.add_argument_group("batching (TensorFlow Serving's knobs, same meanings)")
    batching.add_argument("--no-batching", action="store_true", help="one SavedModel call per request")
    batching.add_argument(
        "--batching-parameters-file", type=Path, help="TF Serving's batching parameters file"
    )
    defaults = BatchingOptions()
    for knob in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        batching.add_argument(f"--{knob}", type=int, default=None, help=f"default {getattr(defaults, knob)}")
    batching.add_argument(
        "--allowed_batch_sizes", default=None, help="comma-separated, ascending, the last = --max_batch_size"
    )
    limits = serve.add_argument_group("limits (each answered with a 4xx)")
    for flag, default, what in (
        ("--max-body-bytes", Limits.max_body_bytes, "request body"),
        ("--max-instances", Limits.max_instances, "sentences per request"),
        ("--max-sentence-chars", Limits.max_sentence_chars, "characters per sentence"),
    ):
        limits.add_argument(flag, type=positive_int, default=default, help=f"{what} (default {default})")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 meaning any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value


def _add_bench_command(commands, preset: str) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure training and decoding speed and memory",
        epilog=settings_epilog(preset),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--preset", default="bench", help="config preset (default: bench, the tutorial's size)"
    )
    bench.add_argument("--quick", action="store_true", help="a tiny model and few steps (about 5 minutes)")
    bench.add_argument(
        "--prepare-only",
        action="store_true",
        help="only the `attend prepare` scale curve: 100k, 1M and 5M recombined pairs (about 8 minutes)",
    )
    bench.add_argument(
        "--out", type=Path, default=Path("bench.json"), help="the JSON report (default: bench.json)"
    )
    bench.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where corpora are cached (default: data/)"
    )
    bench.add_argument(
        "--serve-run",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="time decoding on this trained run (default: a bench-preset model trained for 800 steps)",
    )
    bench.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    """`preset`: whose settings `--help` shows (default: each command's default preset)."""
    parser = argparse.ArgumentParser(
        prog="attend", description="Sequence-to-sequence NMT with Bahdanau attention."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=IntermixedParser
    )
    _add_run_commands(commands, preset or "default")
    _add_distill_command(commands, preset or "fast")
    _add_use_commands(commands)
    _add_serve_command(commands)
    _add_bench_command(commands, preset or "bench")
    for command in commands.choices.values():
        command.add_argument(
            "--debug", action="store_true", help="show the full traceback of an error (for bug reports)"
        )
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    from app.data.prepare import prepare_data

    config = load_config(args.preset, args.overrides)
    data = prepare_data(config, args.data_dir)
    print(f"Prepared {data.corpus.directory} and tokenizers in {data.vocab_dir}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    profile = ["train.profile_batches=10,20"] if args.profile else []
    transfer = [f"train.init_from={args.init_from}"] if args.init_from else []
    transfer += [f"train.init_parts={args.init_parts}"] if args.init_parts else []
    budget = [f"train.max_minutes={args.max_minutes}"] if args.max_minutes is not None else []
    config = load_config(args.preset, [*args.overrides, *profile, *transfer, *budget])
    return _train_and_export(config, args)


def _train_and_export(config, args: argparse.Namespace, label: str = "Run folder") -> int:
    """`train` and `distill`'s common end: the run folder (given, or new, or the interrupted one with
    these settings), training, the export unless --no-export, and what to do next."""
    from app.recipe.distribution import worker_role
    from app.run import RunDir
    from app.train import train

    if config.train.distribution == "multi_worker" and not args.run_dir:
        raise ValueError(
            "train.distribution=multi_worker needs --run-dir: the same folder (on storage every machine "
            "sees) in the command of every worker, so that they resume the same run"
        )
    run = RunDir(args.run_dir) if args.run_dir else RunDir.for_training(config)
    if run.is_unfinished:
        print(f"Resuming the interrupted run in {run}")
    print(f"{label}: {run}")
    train(config, run.path, args.data_dir)
    role = worker_role(config.train.distribution)
    if not role.is_chief:
        print(f"Done: {role.description}; the chief wrote the run folder {run} and exports it")
        return 0
    if not args.no_export:
        from app.export import export_run

        export_run(run.path, data_dir=args.data_dir)
    print(next_steps(run, config, args.data_dir, exported=not args.no_export))
    return 0


def next_steps(run, config, data_dir: Path, exported: bool) -> str:
    """What to do with a finished run, with its real paths, ready to copy."""
    data = "" if data_dir == DATA_DIR else f" --data-dir {data_dir}"
    sample = "Y lloró Jesús." if config.data.corpus == "bible" and config.data.source_bible == "v" else "…"
    lines = [
        "",
        f"Done. Run folder: {run}",
        f"  Look at it:   tensorboard --logdir {run.logs_dir}   (then open http://localhost:6006)",
    ]
    if exported:
        lines += [
            f'  Translate:    attend translate {run} "{sample}"',
            f"  Score it:     attend evaluate {run} --split test{data}",
            f"  SavedModel:   {run.export_dir}",
            f"  Serve it:     attend serve {run}   (TF Serving's REST and gRPC APIs, and a page)",
        ]
    else:
        lines.append(f"  Export it:    attend export {run}")
    if config.name == "smoke":
        lines.append(
            "  Note: a smoke model is tiny and trains for a minute: it shows that everything works, and its "
            "translations are not meant to be good (train the default preset for those)."
        )
    return "\n".join(lines)


def run_export(args: argparse.Namespace) -> int:
    from app.export import export_run

    if args.name and not args.model_base:
        raise ValueError("--name names the model in a --model-base; give --model-base too")
    export_run(
        args.run_dir,
        force=args.force,
        model_base=args.model_base,
        name=args.name,
        xla=args.xla,
        shortlist=args.shortlist,
        data_dir=args.data_dir,
        ensemble=args.ensemble,
        ensemble_last=args.ensemble_last,
        out=args.out,
    )
    return 0


def run_translate(args: argparse.Namespace) -> int:
    from app.translate import Sampling, read_lines, translate_sentences

    batch_size = args.batch_size
    if args.sentences:
        sentences = args.sentences
    else:
        sentences = read_lines(sys.stdin.buffer)
        if sys.stdin.isatty():
            batch_size = 1
    sampling_flags = {"--temperature": args.temperature, "--topk": args.topk, "--seed": args.seed}
    given = [flag for flag, value in sampling_flags.items() if value is not None]
    if given and not args.sample:
        raise ValueError(f"{', '.join(given)} only apply with --sample")
    sample = Sampling(args.temperature, args.topk, args.seed) if args.sample else None
    translations = translate_sentences(
        args.model,
        sentences,
        batch_size,
        args.plot,
        args.nbest,
        sample=sample,
        align=args.align,
        prefix=args.prefix,
    )
    for translation in translations:
        print(translation, flush=batch_size == 1)
    return 0


def run_score(args: argparse.Namespace) -> int:
    from app.rescore import score_lines
    from app.translate import find_export, read_lines

    export_dir = find_export(args.model)
    if args.file is None or str(args.file) == "-":
        lines = read_lines(sys.stdin.buffer)
    else:
        with args.file.open("rb") as stream:
            lines = list(read_lines(stream, str(args.file)))  # a count: the bar's ETA
    for line in score_lines(export_dir, lines, args.batch_size):
        print(line)
    return 0


def run_monolingual(args: argparse.Namespace) -> int:
    from app.data.monolingual import write_monolingual

    write_monolingual(load_config(args.preset, args.overrides), args.data_dir, args.bible, args.out)
    return 0


def run_backtranslate(args: argparse.Namespace) -> int:
    from app.backtranslate import backtranslate, make_decoder
    from app.translate import Sampling, find_export, read_lines

    given = [flag for flag in ("temperature", "topk", "seed") if getattr(args, flag) is not None]
    if given and not args.sample:
        raise ValueError(f"{', '.join('--' + flag for flag in given)} only apply with --sample")
    export_dir = find_export(args.model)
    seed = 0 if args.seed is None else args.seed
    sampling = Sampling(args.temperature, args.topk, seed).inputs(export_dir) if args.sample else None
    decoder = make_decoder(args.model, export_dir, sampling, args.beam, args.data_dir)
    if str(args.file) == "-":
        backtranslate(read_lines(sys.stdin.buffer), decoder, args.out, args.batch_size)
        return 0
    with args.file.open("rb") as stream:
        total = sum(1 for _ in stream)  # the bar's ETA
    with args.file.open("rb") as stream:
        backtranslate(read_lines(stream, str(args.file)), decoder, args.out, args.batch_size, total)
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from app.backtranslate import make_decoder
    from app.distill import Distillation, write_teacher_outputs

    distillation = Distillation.of(args.teacher, args.beam)
    budget = [f"train.max_minutes={args.max_minutes}"] if args.max_minutes is not None else []
    config = distillation.student_config(args.preset, args.references, [*args.overrides, *budget])

    def decoder():  # made only if a line of the teacher's file is left to write
        teacher = distillation.teacher
        return make_decoder(teacher.path, teacher.export_dir, beam=distillation.beam, data_dir=args.data_dir)

    write_teacher_outputs(distillation, decoder, args.data_dir, args.batch_size)
    return _train_and_export(config, args, label="Student run folder")


def run_evaluate(args: argparse.Namespace) -> int:
    from app.evaluate import evaluate_run

    evaluate_run(args.run_dir, args.split, args.beam, args.source, args.data_dir, shortlist=args.shortlist)
    return 0


def run_average(args: argparse.Namespace) -> int:
    from app.average import average_run

    average_run(args.run_dir, args.last, args.out)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from app.evaluate import compare_by_length

    compare_by_length(args.run_dirs, args.out, args.split, args.beam, args.data_dir)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from app.bench import run_bench as bench
    from app.bench import run_prepare_bench

    if args.prepare_only:
        run_prepare_bench(args.preset, args.overrides, args.quick, args.out, args.data_dir)
        return 0
    bench(args.preset, args.overrides, args.quick, args.out, args.data_dir, serve_run=args.serve_run)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from app.serve.command import serve_command

    return serve_command(args)


COMMANDS = {
    "prepare": run_prepare,
    "train": run_train,
    "export": run_export,
    "translate": run_translate,
    "score": run_score,
    "backtranslate": run_backtranslate,
    "distill": run_distill,
    "monolingual": run_monolingual,
    "evaluate": run_evaluate,
    "average": run_average,
    "compare": run_compare,
    "bench": run_bench,
    "serve": run_serve,
}


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Errors are one line on stderr (the traceback only with `--debug`): exit 2
    for what the user can fix (settings, paths, input), 1 for a run that failed or a bug."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_preset_given(argv)).parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as error:
        _report(args, error, _describe_os_error(error) if isinstance(error, OSError) else str(error))
        return 2
    except KeyboardInterrupt:
        print(
            f"\nattend {args.command}: interrupted. A training run resumes from its last finished epoch "
            "when started again with the same settings.",
            file=sys.stderr,
        )
        return 130
    except Exception as error:
        run_failed = getattr(sys.modules.get("app.train"), "RunFailed", ())  # only `train` raises it
        expected = isinstance(error, run_failed)
        if expected:
            print(flush=True)  # after Keras's progress bar, the message starts a line of its own
        hint = "" if expected else " (an unexpected error: run again with --debug for the traceback)"
        _report(args, error, f"{'' if expected else type(error).__name__ + ': '}{error}{hint}")
        return 1


def _report(args: argparse.Namespace, error: BaseException, message: str) -> None:
    if args.debug:
        traceback.print_exception(error, file=sys.stderr)
    print(f"attend {args.command}: error: {message}", file=sys.stderr)


def _describe_os_error(error: OSError) -> str:
    """`Permission denied: models/run/.lock; check that …` from an OSError that names a path."""
    if not error.filename:
        return str(error)
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}; check that the path exists and that you may read and write it"
