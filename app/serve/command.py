"""`attend serve`'s arguments → ServeOptions; `attend serve RUN_DIR` serves a run's export as
version 1 of a model base made for the occasion (a temporary folder linking to it)."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from app.model_base import check_model_name, default_model_name
from app.run import RunDir
from app.serve.options import BatchingOptions, Limits, ServeOptions, read_batching_file


def batching_options(args: argparse.Namespace) -> BatchingOptions | None:
    """The file's parameters (if any), then each flag given on the command line over them."""
    if args.no_batching:
        return None
    options = (
        read_batching_file(args.batching_parameters_file)
        if args.batching_parameters_file
        else BatchingOptions()
    )
    flags = {
        knob: getattr(args, knob)
        for knob in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
        if getattr(args, knob) is not None
    }
    if args.allowed_batch_sizes:
        try:
            flags["allowed_batch_sizes"] = tuple(int(size) for size in args.allowed_batch_sizes.split(","))
        except ValueError:
            raise ValueError(
                f"--allowed_batch_sizes: expected numbers like 8,32,64, got {args.allowed_batch_sizes!r}"
            ) from None
    return dataclasses.replace(options, **flags)


def serve_command(args: argparse.Namespace) -> int:
    from app.serve.server import serve  # TensorFlow loads here, after the arguments are checked

    options = {
        "host": args.host,
        "rest_port": args.rest_port,
        "grpc_port": args.grpc_port,
        "poll_seconds": args.poll_seconds,
        "batching": batching_options(args),
        "limits": Limits(args.max_body_bytes, args.max_instances, args.max_sentence_chars),
    }
    if args.run_dir is None:
        if not args.model_base or not args.model_name:
            raise ValueError(
                "give a run folder (attend serve RUN_DIR), or --model-base BASE --model-name NAME"
            )
        return serve(ServeOptions(args.model_base, check_model_name(args.model_name), **options))
    if args.model_base:
        raise ValueError("give either a run folder or --model-base, not both")
    run = RunDir(args.run_dir)
    name = check_model_name(args.model_name or default_model_name(run.config()))
    if not (run.export_dir / "saved_model.pb").is_file():
        raise ValueError(f"{run} has no export ({run.export_dir}); export it first: attend export {run}")
    with tempfile.TemporaryDirectory(prefix="attend-serve-") as base:
        (Path(base) / name).mkdir()
        (Path(base) / name / "1").symlink_to(run.export_dir.resolve(), target_is_directory=True)
        return serve(ServeOptions(Path(base), name, **options))
