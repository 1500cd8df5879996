"""Corpus preparation: a source of sentence pairs → validated, leak-free, cached splits.

`prepare_corpus` reads the configured source (`app.data.sources`: two Bible translations from
`bible.py`, a local TSV file, or the dates task's generated pairs from `dates.py`), counts every
bad line by reason, removes exact duplicates, splits the pairs so that no source or target
sentence of dev/test also occurs in train, and writes `data/<corpus>/{train,dev,test}.tsv` (UTF-8,
NFC, `source<TAB>target`) with `report.json` and `manifest.json`; a train split over
`data.shard_pairs` pairs is written as `train-00000-of-000NN.tsv` shards instead. Preparing again
with the same input and settings reuses the files; a process that finds another preparing the same
corpus waits for it, then reuses.

Memory stays bounded for corpora of millions of pairs: the source is read once, each valid pair is
spooled to one of SPOOL_BUCKETS temporary files by its seeded key and remembered only by three 64-bit
hashes (`app.data.splits` decides duplicates, subset and splits from them); then each bucket in turn
is sorted by key and its pairs written to their split, so every file comes out in the seeded order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from app.config import SPLIT_SETTINGS, Config, DataConfig
from app.data.lock import exclusive_lock
from app.data.sources import CorpusSource, RawPair, corpus_source
from app.data.sources import read_tsv_records as read_tsv_records  # its callers import it from here
from app.data.splits import (
    DEV,
    DROPPED,
    TEST,
    TRAIN,
    assign_splits,
    component_labels,
    first_occurrences,
    seeded_subset,
    shard_sizes,
)
from app.data.wheels import file_sha256
from app.progress import progress

FORMAT_VERSION = 3  # bump when reading, cleaning or splitting changes, so old splits are rebuilt
SPLITS = ("train", "dev", "test")
BAD_REASONS = ("no_tab", "empty_side", "invalid_utf8", "control_chars", "too_long")
EXAMPLES_PER_REASON = 5
PROGRESS_EVERY = 50_000
SPOOL_BUCKETS = 128  # pass 2 holds one bucket's lines at a time: 1/128 of the corpus
MAX_SHARDS = 256  # pass 2 keeps every shard open (and processes may open 1,024 files)
SHARD_NAME = "train-{index:05d}-of-{count:05d}.tsv"
SHARD_FILE = re.compile(r"train-\d{5}-of-\d{5}\.tsv")
# C0 controls but tab (the field separator), DEL and C1 controls: never part of a sentence, they
# are binary debris (NUL) or terminal colour codes (ESC [31m) that a model would learn to emit.
# Line ends (\n, a CRLF file's \r) are removed before the check.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# DataConfig fields that change the prepared files (the languages and the TSV's path do not).
OUTPUT_FIELDS = ("corpus", *SPLIT_SETTINGS)

Log = Callable[[str], object]
Pair = tuple[str, str]


@dataclass(frozen=True)
class PreparedCorpus:
    """The prepared splits of one corpus, as files, and what preparing them found.

    Later steps (tokenizer fitting, the tf.data pipeline, evaluation) read these files and never the
    raw source, so every run on the same corpus sees exactly the same sentences. `train_files` is
    `(train.tsv,)`, or the shards in order when the train split is sharded; their concatenation is
    the train split in its seeded order.
    """

    directory: Path
    train_files: tuple[Path, ...]
    dev: Path
    test: Path
    report: dict

    @property
    def train(self) -> Path:
        """The one train file; a sharded corpus raises, so that no reader silently takes one shard."""
        if len(self.train_files) != 1:
            raise ValueError(
                f"The train split of {self.directory} is sharded into {len(self.train_files)} files; "
                "read PreparedCorpus.train_files (app.data.pipeline.make_dataset takes them all)"
            )
        return self.train_files[0]

    def split_files(self, split: str) -> tuple[Path, ...]:
        """The files of one split: the train shards, or the one dev or test file."""
        return self.train_files if split == "train" else (getattr(self, split),)


@dataclass
class Tally:
    """What validation read, kept and rejected, with the first locations of each problem.

    Bad lines are never dropped silently: the counts and their line numbers go into the report, so
    that a user can find and fix them in the source file.
    """

    read: int = 0
    duplicates: int = 0
    bad: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_REASONS, 0))
    locations: dict[str, list] = field(default_factory=lambda: {reason: [] for reason in BAD_REASONS})

    def reject(self, reason: str, location: int | str) -> None:
        """Counts a bad record; a source's own reason (cmudict's `not_letters`) joins BAD_REASONS."""
        self.bad[reason] = self.bad.get(reason, 0) + 1
        if len(self.locations.setdefault(reason, [])) < EXAMPLES_PER_REASON:
            self.locations[reason].append(location)


# === Entry point ===


def prepare_corpus(
    config: Config, data_dir: Path = Path("data"), *, log: Log = print, force: bool = False
) -> PreparedCorpus:
    """Writes (or reuses) `data_dir/<config.corpus_name>/{train,dev,test}.tsv` and returns them.

    Holds `data_dir/.<corpus>.lock` meanwhile: a second process preparing the same corpus waits,
    then reuses what the first wrote. Raises ValueError for a missing source file, unknown Bible
    codes, or a source in which no valid pair remains. The settings' ranges are checked when the
    Config is loaded (`app.config.validate`).
    """
    source = corpus_source(config.data)
    source.check()
    for warning in source.warnings():
        log(f"Warning: {warning}")
    directory = Path(data_dir) / config.corpus_name
    inputs = fingerprint_inputs(config.data)
    with exclusive_lock(Path(data_dir) / f".{config.corpus_name}.lock", f"the corpus {directory}", log):
        if not force and _is_up_to_date(directory, _digest(inputs)):
            prepared = _load_prepared(directory)
            sizes = _sizes(prepared.report)
            log(f"Reusing the prepared corpus in {directory} ({sizes}): same source and settings")
            return prepared
        started = time.perf_counter()
        _build(config, source, Path(data_dir), directory, inputs, log)
        log(f"Wrote {directory}/{{train,dev,test}}.tsv in {time.perf_counter() - started:.1f} s")
        return _load_prepared(directory)


def _build(
    config: Config, source: CorpusSource, data_dir: Path, directory: Path, inputs: dict, log: Log
) -> None:
    data = config.data
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".staging-"))
    try:
        spool, tally = spool_pairs(source.read(data_dir, log), data.max_chars, data.seed, staging, log)
        if not len(spool.keys):
            summary = _bad_summary(tally.read, _bad_report(tally))
            raise ValueError(f"No valid pair remains in {source.describe()}: {summary}")
        codes, facts = decide_splits(spool, data, by_source_only=source.group_by_source_only)
        tally.duplicates = len(spool.keys) - facts["unique"]
        names = _train_names(facts["shards"])
        written = write_splits(spool, codes, staging, names, facts["shards"])
        report = _build_report(config, source, tally, facts, written, names)
        _install(staging, directory, names, report, {"fingerprint": _digest(inputs), "inputs": inputs})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _log_report(report, log)


# === Validation ===


def normalize_text(text: str) -> str:
    """NFC, then every run of whitespace (tabs, newlines, U+00A0, U+3000, …) to one space, stripped.

    The same steps, in the same order, as the in-graph `app.data.tokenizer.normalize` that the
    exported model applies at serving time.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def validate_pair(record: RawPair, max_chars: int) -> tuple[str | None, Pair | None]:
    """Returns `(problem, None)` for a bad record and `(None, normalised pair)` for a good one."""
    if record.problem:
        return record.problem, None
    if CONTROL_CHARACTERS.search(record.source) or CONTROL_CHARACTERS.search(record.target):
        return "control_chars", None  # checked before normalize_text, which turns some into spaces
    source, target = normalize_text(record.source), normalize_text(record.target)
    if not source or not target:
        return "empty_side", None
    if len(source) > max_chars or len(target) > max_chars:
        return "too_long", None
    return None, (source, target)


def _validated(records: Iterable[RawPair], max_chars: int, tally: Tally, log: Log, kept: Callable[[], int]):
    """Yields each valid, normalised pair; counts every record and each bad one in `tally`.

    On a terminal a bar on stderr counts the lines as they are read (`app.progress`); the log's
    line every PROGRESS_EVERY lines is there either way, for logs that are files."""
    started = time.perf_counter()
    with progress(records, unit="lines", description="Reading the corpus", leave=False) as bar:
        for record in bar:
            tally.read += 1
            problem, pair = validate_pair(record, max_chars)
            if problem:
                tally.reject(problem, record.location)
            else:
                yield pair
            if tally.read % PROGRESS_EVERY == 0:
                bar.clear()  # on a terminal: the log line, then the bar again below it at its next update
                log(f"  read {tally.read:,} lines ({kept():,} pairs kept so far)")
    log(f"Read {tally.read:,} lines in {time.perf_counter() - started:.1f} s")


# === Pass 1: validate, hash, spool ===


@dataclass(frozen=True)
class Spool:
    """The valid pairs of pass 1: bucket files of `index<TAB>source<TAB>target` lines and, per index
    (reading order), the pair's seeded keys (split order and identity; the max_pairs choice) and the
    hashes of its sides."""

    directory: Path
    keys: np.ndarray
    subset_keys: np.ndarray
    source_hashes: np.ndarray
    target_hashes: np.ndarray

    def bucket(self, number: int) -> Path:
        return _bucket_path(self.directory, number)


def _bucket_path(spool_dir: Path, number: int) -> Path:
    return spool_dir / f"bucket-{number:03d}.tsv"


def text_hash(text: bytes) -> bytes:
    """8 bytes that stand for a sentence: equal texts, equal hashes, on every machine and Python."""
    return hashlib.blake2b(text, digest_size=8).digest()


def seeded_key(seed: int, purpose: str, source: bytes, target: bytes) -> bytes:
    """A pseudo-random but reproducible sort key of a pair: the same on every machine and Python.

    The first 8 bytes of the 16-byte key that FORMAT_VERSION 2 sorted by, so that the splits, their
    order and the max_pairs subset are those of the in-memory preparation before it (and the
    figures measured on them stay comparable)."""
    text = b"%d\x00%s\x00%s\t%s" % (seed, purpose.encode(), source, target)
    return hashlib.blake2b(text, digest_size=16).digest()[:8]


def spool_pairs(
    records: Iterable[RawPair], max_chars: int, seed: int, directory: Path, log: Log = print
) -> tuple[Spool, Tally]:
    """Pass 1: validates the records and writes every valid pair to the bucket of its seeded key.

    The key (a keyed hash of both sides' hashes) sorts the splits and identifies duplicates; its top
    bits pick the bucket, so reading the buckets in turn, each sorted, visits the pairs in key order.
    """
    tally = Tally()
    hashes = {name: bytearray() for name in ("keys", "subset_keys", "sources", "targets")}
    spool_dir = directory / "spool"
    spool_dir.mkdir()
    buckets: dict[int, BinaryIO] = {}
    with ExitStack() as stack:
        valid = _validated(records, max_chars, tally, log, lambda: len(hashes["keys"]) // 8)
        for index, (source, target) in enumerate(valid):
            source_bytes, target_bytes = source.encode("utf-8"), target.encode("utf-8")
            source_hash, target_hash = text_hash(source_bytes), text_hash(target_bytes)
            key = seeded_key(seed, "split", source_bytes, target_bytes)
            hashes["keys"] += key
            hashes["subset_keys"] += seeded_key(seed, "subset", source_bytes, target_bytes)
            hashes["sources"] += source_hash
            hashes["targets"] += target_hash
            number = key[0] * SPOOL_BUCKETS // 256
            if number not in buckets:
                buckets[number] = stack.enter_context(open(_bucket_path(spool_dir, number), "wb"))
            buckets[number].write(b"%d\t%s\t%s\n" % (index, source_bytes, target_bytes))
    arrays = {
        name: np.frombuffer(bytes(value), dtype=">u8").astype(np.uint64) for name, value in hashes.items()
    }
    spool = Spool(spool_dir, arrays["keys"], arrays["subset_keys"], arrays["sources"], arrays["targets"])
    return spool, tally


# === Decisions: duplicates, subset, splits, shards ===


def decide_splits(spool: Spool, data: DataConfig, *, by_source_only: bool = False) -> tuple[np.ndarray, dict]:
    """The split code of every spooled pair (DROPPED for duplicates and pairs outside `max_pairs`),
    and the facts for the report: unique pairs, groups, notes, train shard sizes. `by_source_only`:
    group pairs by their source alone (a word with all its pronunciations), not by either side."""
    unique = first_occurrences(spool.keys)
    kept = seeded_subset(unique, spool.subset_keys, data.max_pairs)
    target_hashes = spool.source_hashes if by_source_only else spool.target_hashes
    split_of_kept, groups, notes = assign_splits(
        spool.source_hashes[kept], target_hashes[kept], spool.keys[kept], data.test_size, data.dev_size
    )
    codes = np.full(len(spool.keys), DROPPED, dtype=np.int8)
    codes[kept] = split_of_kept
    shards = shard_sizes(int((split_of_kept == TRAIN).sum()), data.shard_pairs)
    if len(shards) > MAX_SHARDS:
        raise ValueError(
            f"data.shard_pairs={data.shard_pairs:,} cuts the train split into {len(shards):,} files; at most "
            f"{MAX_SHARDS:,} are written. Raise data.shard_pairs."
        )
    return codes, {"unique": len(unique), "groups": groups, "notes": notes, "shards": shards}


def group_related(pairs: list[Pair]) -> list[list[int]]:
    """Groups pair indices that share a source or a target text, directly or through a chain.

    Returns the groups in order of their first member; members keep their order. (The in-memory
    view of `app.data.splits.component_labels`, which preparation runs on hashes.)
    """
    sides = [
        np.frombuffer(b"".join(text_hash(pair[side].encode("utf-8")) for pair in pairs), dtype=">u8")
        for side in (0, 1)
    ]
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(component_labels(*sides).tolist()):
        groups[label].append(index)
    return list(groups.values())


# === Pass 2: each bucket, sorted, to its split ===


class _ShardWriter:
    """Writes lines to consecutive open files, moving to the next when one holds its share."""

    def __init__(self, handles: list[BinaryIO], sizes: list[int]):
        self.handles, self.sizes = handles, sizes
        self.current, self.written = 0, 0

    def write(self, line: bytes) -> None:
        if self.written == self.sizes[self.current]:
            self.current, self.written = self.current + 1, 0
        self.handles[self.current].write(line)
        self.written += 1


def write_splits(
    spool: Spool, codes: np.ndarray, directory: Path, train_names: list[str], shard_sizes: list[int]
) -> dict[str, int]:
    """Pass 2: reads one bucket at a time, sorts it by key and appends each pair to its split's file.

    Buckets cover increasing key ranges, so every file ends up sorted by the seeded key (the order
    the splits had when they were sorted in memory) and train's shards split that order in turn.
    """
    written = dict.fromkeys(SPLITS, 0)
    with ExitStack() as stack:
        writers = {
            TRAIN: _ShardWriter(
                [stack.enter_context(open(directory / name, "wb")) for name in train_names], shard_sizes
            ),
            DEV: stack.enter_context(open(directory / "dev.tsv", "wb")),
            TEST: stack.enter_context(open(directory / "test.tsv", "wb")),
        }
        for number in range(SPOOL_BUCKETS):
            for code, line in _sorted_bucket(spool, codes, number):
                writers[code].write(line)
                written[SPLITS[code]] += 1
            spool.bucket(number).unlink(missing_ok=True)  # the disk holds the source, spool and splits once
    return written


def _sorted_bucket(spool: Spool, codes: np.ndarray, number: int) -> Iterator[tuple[int, bytes]]:
    """(split code, `source<TAB>target\\n`) of a bucket's kept pairs, by key (then reading order)."""
    path = spool.bucket(number)
    if not path.is_file():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    tabs = [line.index(b"\t") for line in lines]
    indices = np.array([int(line[:tab]) for line, tab in zip(lines, tabs, strict=True)], dtype=np.int64)
    order = np.lexsort((indices, spool.keys[indices]))
    for position in order[codes[indices[order]] != DROPPED].tolist():
        yield int(codes[indices[position]]), lines[position][tabs[position] + 1 :]


def _train_names(shards: list[int]) -> list[str]:
    if len(shards) == 1:
        return ["train.tsv"]
    return [SHARD_NAME.format(index=index, count=len(shards)) for index in range(len(shards))]


# === Cache ===


def fingerprint_inputs(data: DataConfig) -> dict:
    """What the prepared files depend on: format version, settings and the input's identity."""
    settings = {name: getattr(data, name) for name in OUTPUT_FIELDS}
    return {"format_version": FORMAT_VERSION, "settings": settings, "source": corpus_source(data).identity()}


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()


def _is_up_to_date(directory: Path, fingerprint: str) -> bool:
    """The manifest matches the inputs and every file it lists (each shard included) is unchanged."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = manifest.get("files", {})
    expected = {*report.get("train_files", []), "dev.tsv", "test.tsv"}
    if manifest.get("fingerprint") != fingerprint or set(files) != expected:
        return False
    return all(
        (directory / name).is_file() and file_sha256(directory / name) == files[name] for name in files
    )


def prepared_train_files(directory: Path) -> tuple[Path, ...]:
    """The train split's file(s) of a prepared corpus folder, in order; () where none is prepared."""
    try:
        report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    return tuple(directory / name for name in report.get("train_files", []))


def _load_prepared(directory: Path) -> PreparedCorpus:
    report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    train_files = tuple(directory / name for name in report["train_files"])
    return PreparedCorpus(
        directory=directory,
        train_files=train_files,
        dev=directory / "dev.tsv",
        test=directory / "test.tsv",
        report=report,
    )


def _install(staging: Path, directory: Path, train_names: list[str], report: dict, manifest: dict) -> None:
    """Renames the staged files into place, the manifest last, and removes stale train files.

    An interrupted run leaves either the old files with their manifest, or no manifest (so the next
    run rebuilds); never files that look valid but are incomplete. Other files in the folder stay,
    but train shards (or a train.tsv) of an earlier preparation go, so no reader mixes two of them.
    """
    names = [*train_names, "dev.tsv", "test.tsv"]
    manifest = {**manifest, "files": {name: file_sha256(staging / name) for name in names}}
    _write_json(staging / "report.json", report)
    _write_json(staging / "manifest.json", manifest)
    (directory / "manifest.json").unlink(missing_ok=True)
    for path in directory.iterdir():
        if (path.name == "train.tsv" or SHARD_FILE.fullmatch(path.name)) and path.name not in train_names:
            path.unlink()
    for name in [*names, "report.json", "manifest.json"]:
        os.replace(staging / name, directory / name)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# === Report ===


def _build_report(
    config: Config,
    source: CorpusSource,
    tally: Tally,
    facts: dict,
    written: dict[str, int],
    train_names: list[str],
) -> dict:
    """The facts of one preparation, as stored in report.json (no timings, so it is reproducible)."""
    return {
        "corpus": config.corpus_name,
        "source": source.describe(),
        "read": tally.read,
        "bad": _bad_report(tally),
        "duplicates": tally.duplicates,
        "unique": facts["unique"],
        "max_pairs": config.data.max_pairs,
        "kept": sum(written.values()),
        "groups": facts["groups"],
        "requested": {"dev": config.data.dev_size, "test": config.data.test_size},
        "splits": written,
        "train_files": train_names,
        "train_file_pairs": facts["shards"],
        "notes": facts["notes"],
    }


def _bad_report(tally: Tally) -> dict:
    return {
        reason: {"count": tally.bad[reason], "locations": tally.locations[reason]} for reason in tally.bad
    }


def _bad_summary(read: int, bad: dict) -> str:
    """`31,102 lines read; bad: no_tab 0, empty_side 2 (at 9:13:1, 11:15:6), …`"""
    parts = []
    for reason, found in bad.items():
        where = f" (at {', '.join(map(str, found['locations']))})" if found["locations"] else ""
        parts.append(f"{reason} {found['count']:,}{where}")
    return f"{read:,} lines read; bad: " + ", ".join(parts)


def _log_report(report: dict, log: Log) -> None:
    log(f"Corpus {report['corpus']} from {report['source']}")
    log(f"  {_bad_summary(report['read'], report['bad'])}; duplicates {report['duplicates']:,}")
    if report["kept"] < report["unique"]:
        log(f"  max_pairs: kept a seeded subset of {report['kept']:,} of {report['unique']:,} pairs")
    log(f"  kept {report['kept']:,} pairs in {report['groups']:,} groups of related pairs: {_sizes(report)}")
    if len(report["train_files"]) > 1:
        log(
            f"  train in {len(report['train_files'])} shards of at most "
            f"{max(report['train_file_pairs']):,} pairs"
        )
    for note in report["notes"]:
        log(f"  note: {note}")


def _sizes(report: dict) -> str:
    return ", ".join(f"{split} {count:,}" for split, count in report["splits"].items())
