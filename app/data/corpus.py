"""Corpus preparation: a source of sentence pairs → validated, leak-free, cached splits.

`prepare_corpus` reads the configured source (two Bible translations from `bible.py`, or a local
TSV file), counts every bad line by reason, removes exact duplicates, splits the pairs so that no
source or target sentence of dev/test also occurs in train, and writes
`data/<corpus>/{train,dev,test}.tsv` (UTF-8, NFC, `source<TAB>target`) with `report.json` and
`manifest.json`. Preparing again with the same input and settings reuses the files.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from app.config import Config, DataConfig
from app.data.bible import bible_db_name, describe_bible, fetch_bible_db, file_sha256, read_bible_pairs
from app.progress import progress

FORMAT_VERSION = 2  # bump when reading, cleaning or splitting changes, so old splits are rebuilt
SPLITS = ("train", "dev", "test")
BAD_REASONS = ("no_tab", "empty_side", "invalid_utf8", "control_chars", "too_long")
EXAMPLES_PER_REASON = 5
PROGRESS_EVERY = 50_000
MAX_HELD_OUT_FRACTION = 0.1  # dev and test each take at most this share of a small corpus
# C0 controls but tab (the field separator), DEL and C1 controls: never part of a sentence, they
# are binary debris (NUL) or terminal colour codes (ESC [31m) that a model would learn to emit.
# Line ends (\n, a CRLF file's \r) are removed before the check.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# DataConfig fields that change the prepared files (the languages and the TSV's path do not).
OUTPUT_FIELDS = ("corpus", "max_chars", "max_pairs", "dev_size", "test_size", "seed")

Log = Callable[[str], object]
Pair = tuple[str, str]


@dataclass(frozen=True)
class PreparedCorpus:
    """The prepared splits of one corpus, as files, and what preparing them found.

    Later steps (tokenizer fitting, the tf.data pipeline, evaluation) read these files and never the
    raw source, so every run on the same corpus sees exactly the same sentences.
    """

    directory: Path
    train: Path
    dev: Path
    test: Path
    report: dict


class RawPair(NamedTuple):
    """One line or verse as read, before validation.

    Readers set `problem` for lines they could not turn into two fields (undecodable, no tab), so
    that validation counts them with all other bad lines instead of the reader dropping them.
    """

    location: int | str  # 1-based line number, or a Bible reference such as "43:11:35"
    source: str = ""
    target: str = ""
    problem: str | None = None


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
        self.bad[reason] += 1
        if len(self.locations[reason]) < EXAMPLES_PER_REASON:
            self.locations[reason].append(location)


# === Entry point ===


def prepare_corpus(
    config: Config, data_dir: Path = Path("data"), *, log: Log = print, force: bool = False
) -> PreparedCorpus:
    """Writes (or reuses) `data_dir/<config.corpus_name>/{train,dev,test}.tsv` and returns them.

    Raises ValueError for a missing source file, unknown Bible codes, bad settings, or a source in
    which no valid pair remains.
    """
    _check_settings(config.data)
    for warning in _language_mismatches(config.data):
        log(f"Warning: {warning}")
    directory = Path(data_dir) / config.corpus_name
    inputs = fingerprint_inputs(config.data)
    if not force and _is_up_to_date(directory, _digest(inputs)):
        prepared = _load_prepared(directory)
        sizes = _sizes(prepared.report)
        log(f"Reusing the prepared corpus in {directory} ({sizes}): same source and settings")
        return prepared
    started = time.perf_counter()
    _build(config, Path(data_dir), directory, inputs, log)
    log(f"Wrote {directory}/{{train,dev,test}}.tsv in {time.perf_counter() - started:.1f} s")
    return _load_prepared(directory)


def _build(config: Config, data_dir: Path, directory: Path, inputs: dict, log: Log) -> None:
    data = config.data
    pairs, tally = collect_pairs(_read_source(data, data_dir, log), data.max_chars, log)
    if not pairs:
        summary = _bad_summary(tally.read, _bad_report(tally))
        raise ValueError(f"No valid pair remains in {_describe_source(data)}: {summary}")
    kept = select_subset(pairs, data.max_pairs, data.seed)
    splits, groups, notes = split_pairs(kept, data.test_size, data.dev_size, data.seed)
    report = _build_report(config, tally, len(pairs), splits, groups, notes)
    _write_prepared(directory, splits, report, {"fingerprint": _digest(inputs), "inputs": inputs})
    _log_report(report, log)


def _check_settings(data: DataConfig) -> None:
    if data.dev_size < 0 or data.test_size < 0:
        raise ValueError(
            f"data.dev_size and data.test_size must be >= 0, not {data.dev_size}/{data.test_size}"
        )
    if data.max_chars < 1:
        raise ValueError(f"data.max_chars must be at least 1, not {data.max_chars}")
    if data.max_pairs is not None and data.max_pairs < 1:
        raise ValueError(f"data.max_pairs must be at least 1 (or null for all pairs), not {data.max_pairs}")


def _language_mismatches(data: DataConfig) -> list[str]:
    """Bible translations whose language differs from data.source_language/target_language."""
    if data.corpus != "bible":
        return []
    warnings = []
    for side, code, language in (
        ("source", data.source_bible, data.source_language),
        ("target", data.target_bible, data.target_language),
    ):
        bible = describe_bible(code)
        if bible.language != language:
            warnings.append(
                f"data.{side}_bible={code} is {bible.name} ({bible.language}) but "
                f"data.{side}_language={language}; set data.{side}_language={bible.language}"
            )
    return warnings


# === Sources ===


def _read_source(data: DataConfig, data_dir: Path, log: Log) -> Iterator[RawPair]:
    if data.corpus == "bible":
        database = fetch_bible_db(data_dir / "cache", log=log)
        verses = read_bible_pairs(database, data.source_bible, data.target_bible)
        return (RawPair(reference, source, target) for reference, source, target in verses)
    return read_tsv_records(_tsv_path(data), swap=data.swap)


def _tsv_path(data: DataConfig) -> Path:
    if not data.tsv_path:
        raise ValueError("data.corpus=tsv needs data.tsv_path=PATH (a file of source<TAB>target lines)")
    path = Path(data.tsv_path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a directory; data.tsv_path must be a file of source<TAB>target lines")
    if not path.is_file():
        raise ValueError(f"TSV corpus {path} does not exist (set data.tsv_path to a source<TAB>target file)")
    return path


def read_tsv_records(path: Path, *, swap: bool = False) -> Iterator[RawPair]:
    """Yields one RawPair per line of a `source<TAB>target[<TAB>anything]` file.

    The file is read as bytes and decoded line by line, so an invalid byte sequence costs one line,
    not the run. `swap` exchanges the first two columns (for target-first files).
    """
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield _parse_tsv_line(number, line, swap)


def _parse_tsv_line(number: int, line: bytes, swap: bool) -> RawPair:
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return RawPair(number, problem="invalid_utf8")
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    fields = text.split("\t")
    if len(fields) < 2:
        return RawPair(number, problem="no_tab")
    source, target = (fields[1], fields[0]) if swap else (fields[0], fields[1])
    return RawPair(number, source, target)


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


def collect_pairs(records: Iterable[RawPair], max_chars: int, log: Log = print) -> tuple[list[Pair], Tally]:
    """Validates records and keeps each distinct pair once, in first-seen order.

    On a terminal a bar on stderr counts the lines as they are read (`app.progress`); the log's
    line every PROGRESS_EVERY lines is there either way, for logs that are files."""
    tally = Tally()
    unique: dict[Pair, None] = {}
    started = time.perf_counter()
    with progress(records, unit="lines", description="Reading the corpus", leave=False) as bar:
        for record in bar:
            tally.read += 1
            problem, pair = validate_pair(record, max_chars)
            if problem:
                tally.reject(problem, record.location)
            elif pair in unique:
                tally.duplicates += 1
            else:
                unique[pair] = None
            if tally.read % PROGRESS_EVERY == 0:
                bar.clear()  # on a terminal: the log line, then the bar again below it at its next update
                log(f"  read {tally.read:,} lines ({len(unique):,} pairs kept so far)")
    log(f"Read {tally.read:,} lines in {time.perf_counter() - started:.1f} s")
    return list(unique), tally


# === Subset and splits ===


def _seeded_key(seed: int, purpose: str, pair: Pair) -> bytes:
    """A pseudo-random but reproducible sort key: the same on every machine and Python version."""
    text = f"{seed}\x00{purpose}\x00{pair[0]}\t{pair[1]}"
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def select_subset(pairs: list[Pair], max_pairs: int | None, seed: int) -> list[Pair]:
    """Keeps a seeded choice of `max_pairs` pairs (all of them when None), in their original order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    keys = [_seeded_key(seed, "subset", pair) for pair in pairs]
    chosen = set(heapq.nsmallest(max_pairs, range(len(pairs)), key=keys.__getitem__))
    return [pair for index, pair in enumerate(pairs) if index in chosen]


def group_related(pairs: list[Pair]) -> list[list[int]]:
    """Groups pair indices that share a source or a target text, directly or through a chain.

    Returns the groups in order of their first member; members keep their order.
    """
    parent = list(range(len(pairs)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]  # path halving keeps the trees flat
            index = parent[index]
        return index

    first_with: dict[tuple[str, str], int] = {}
    for index, (source, target) in enumerate(pairs):
        for side_text in (("source", source), ("target", target)):
            parent[root(index)] = root(first_with.setdefault(side_text, index))
    groups: dict[int, list[int]] = defaultdict(list)
    for index in range(len(pairs)):
        groups[root(index)].append(index)
    return list(groups.values())


def held_out_sizes(
    pair_count: int, group_count: int, test_size: int, dev_size: int
) -> tuple[int, int, list[str]]:
    """Shrinks the requested test/dev sizes for a small corpus so that train is never empty.

    Each held-out split gets at most 10% of the pairs (at least 1 when there are 3 or more groups);
    with fewer than 3 groups, everything goes to train.
    """
    cap = max(1, int(pair_count * MAX_HELD_OUT_FRACTION)) if group_count >= 3 else 0
    test, dev = min(test_size, cap), min(dev_size, cap)
    notes = []
    if (test, dev) != (test_size, dev_size):
        notes.append(
            f"the corpus ({pair_count:,} pairs in {group_count:,} groups) is too small for test {test_size:,}"
            f" / dev {dev_size:,}; using test {test:,} / dev {dev:,}"
        )
    return test, dev, notes


def split_pairs(
    pairs: list[Pair], test_size: int, dev_size: int, seed: int
) -> tuple[dict[str, list[Pair]], int, list[str]]:
    """Splits pairs into train/dev/test without leakage; returns the splits, group count and notes.

    Groups of related pairs (see `group_related`) are visited in a seeded order; a group goes to
    test if it fits in what test still needs, else to dev if it fits there, else to train. So
    held-out splits never exceed their size and large groups (frequent sentences) stay in train.
    """
    keys = [_seeded_key(seed, "split", pair) for pair in pairs]
    groups = sorted(group_related(pairs), key=lambda members: min(keys[index] for index in members))
    test, dev, notes = held_out_sizes(len(pairs), len(groups), test_size, dev_size)
    assignment = _assign_groups(groups, {"test": test, "dev": dev})
    notes += _fill_empty_held_out(assignment, {"test": test, "dev": dev})
    splits = {}
    for split in SPLITS:
        members = sorted((index for group in assignment[split] for index in group), key=keys.__getitem__)
        splits[split] = [pairs[index] for index in members]
    return splits, len(groups), notes


def _assign_groups(groups: list[list[int]], targets: dict[str, int]) -> dict[str, list[list[int]]]:
    assignment: dict[str, list[list[int]]] = {split: [] for split in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)
    for group in groups:
        split = next(
            (name for name in ("test", "dev") if counts[name] + len(group) <= targets[name]), "train"
        )
        assignment[split].append(group)
        counts[split] += len(group)
    return assignment


def _fill_empty_held_out(assignment: dict[str, list[list[int]]], targets: dict[str, int]) -> list[str]:
    """Moves the smallest train group into a held-out split that no group fitted, keeping train non-empty."""
    notes = []
    for split in ("test", "dev"):
        if targets[split] > 0 and not assignment[split] and len(assignment["train"]) >= 2:
            smallest = min(assignment["train"], key=len)
            assignment["train"].remove(smallest)
            assignment[split].append(smallest)
            notes.append(
                f"no group fitted in {split} ({targets[split]:,}); it got one group of {len(smallest):,}"
            )
    return notes


# === Cache ===


def fingerprint_inputs(data: DataConfig) -> dict:
    """What the prepared files depend on: format version, settings and the input's identity."""
    settings = {name: getattr(data, name) for name in OUTPUT_FIELDS}
    return {"format_version": FORMAT_VERSION, "settings": settings, "source": _source_identity(data)}


def _source_identity(data: DataConfig) -> dict:
    if data.corpus == "bible":
        describe_bible(data.source_bible)
        describe_bible(data.target_bible)
        return {
            "database": bible_db_name(),
            "source_bible": data.source_bible,
            "target_bible": data.target_bible,
        }
    if data.corpus == "tsv":
        return {"tsv_sha256": file_sha256(_tsv_path(data)), "swap": data.swap}
    raise ValueError(f"data.corpus={data.corpus!r} is not one of ['bible', 'tsv']")


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()


def _is_up_to_date(directory: Path, fingerprint: str) -> bool:
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("fingerprint") != fingerprint or not (directory / "report.json").is_file():
        return False
    files = manifest.get("files", {})
    for split in SPLITS:
        path = directory / f"{split}.tsv"
        if not path.is_file() or file_sha256(path) != files.get(split):
            return False
    return True


def _load_prepared(directory: Path) -> PreparedCorpus:
    report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    paths = {split: directory / f"{split}.tsv" for split in SPLITS}
    return PreparedCorpus(directory=directory, report=report, **paths)


def _write_prepared(directory: Path, splits: dict[str, list[Pair]], report: dict, manifest: dict) -> None:
    """Writes all files into a staging folder, then renames them into place, the manifest last.

    An interrupted run leaves either the old files with their manifest, or no manifest (so the next
    run rebuilds); never files that look valid but are incomplete. Other files in the folder stay.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".staging-"))
    try:
        for split in SPLITS:
            _write_tsv(staging / f"{split}.tsv", splits[split])
        manifest = {**manifest, "files": {split: file_sha256(staging / f"{split}.tsv") for split in SPLITS}}
        _write_json(staging / "report.json", report)
        _write_json(staging / "manifest.json", manifest)
        (directory / "manifest.json").unlink(missing_ok=True)
        for name in [f"{split}.tsv" for split in SPLITS] + ["report.json", "manifest.json"]:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_tsv(path: Path, pairs: list[Pair]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{source}\t{target}\n" for source, target in pairs)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# === Report ===


def _describe_source(data: DataConfig) -> str:
    if data.corpus == "bible":
        source, target = describe_bible(data.source_bible), describe_bible(data.target_bible)
        return (
            f"{bible_db_name()}: {data.source_bible} ({source.language}, {source.name}) → "
            f"{data.target_bible} ({target.language}, {target.name})"
        )
    return f"{data.tsv_path}{' (columns swapped)' if data.swap else ''}"


def _build_report(
    config: Config, tally: Tally, unique: int, splits: dict[str, list[Pair]], groups: int, notes: list[str]
) -> dict:
    """The facts of one preparation, as stored in report.json (no timings, so it is reproducible)."""
    return {
        "corpus": config.corpus_name,
        "source": _describe_source(config.data),
        "read": tally.read,
        "bad": _bad_report(tally),
        "duplicates": tally.duplicates,
        "unique": unique,
        "max_pairs": config.data.max_pairs,
        "kept": sum(len(pairs) for pairs in splits.values()),
        "groups": groups,
        "requested": {"dev": config.data.dev_size, "test": config.data.test_size},
        "splits": {split: len(splits[split]) for split in SPLITS},
        "notes": notes,
    }


def _bad_report(tally: Tally) -> dict:
    return {
        reason: {"count": tally.bad[reason], "locations": tally.locations[reason]} for reason in BAD_REASONS
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
    for note in report["notes"]:
        log(f"  note: {note}")


def _sizes(report: dict) -> str:
    return ", ".join(f"{split} {count:,}" for split, count in report["splits"].items())
