"""`data.corpora`: more training corpora beside the main one, prepared for weighted mixing.

An extra corpus is read by its source class (`app.data.sources`, with the entry's own settings)
and validated as the main corpus is (`app.data.corpus.validate_pair`: bad lines counted by reason,
with their first locations); its exact duplicates go, and so does every pair whose source or
target is a sentence of the main corpus's dev or test split (counted as `held_out_overlap`), so
that no test sentence reaches training through a second corpus. It is not split: dev and test
come from the main corpus only. Its one `train.tsv` (reading order; the pipeline shuffles) lives
under the main corpus's folder, `data/<main>/extra-<source>-<digest>/`, with `report.json` and
`manifest.json`, and is reused while its source, `data.max_chars` and the main corpus's held-out
splits are unchanged. The length filter is counted and applied later, as for the main corpus
(`app.data.prepare.filter_report`, `app.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.config import CORPUS_FOLDERS, Config, DataConfig, ExtraCorpus
from app.data.corpus import PreparedCorpus, Tally, text_hash, validate_pair
from app.data.lock import exclusive_lock
from app.data.sources import corpus_source
from app.data.tokenizer import read_lines
from app.data.wheels import file_sha256

FORMAT_VERSION = 1  # bump when reading or cleaning an extra corpus changes
# The reserved source piece of `train.tag_synthetic` (Caswell et al., 2019): a SentencePiece control
# symbol, so that no input text ever tokenizes to it (only the training pipeline prepends its id).
SYNTHETIC_TAG = "<BT>"
Log = Callable[[str], object]


@dataclass(frozen=True)
class PreparedExtra:
    """One prepared entry of `data.corpora` (`index` 1 is the first: 0 is the main corpus)."""

    index: int
    name: str  # its source's folder name (`app.config.CORPUS_FOLDERS`): `tsv-synthetic`
    settings: ExtraCorpus
    directory: Path
    report: dict

    @property
    def train_files(self) -> tuple[Path, ...]:
        return (self.directory / "train.tsv",)

    @property
    def label(self) -> str:
        """How the log, the length filter's counts and the model card name it."""
        return f"corpus {self.index}: {self.name}"


def tags_synthetic(config: Config) -> bool:
    """Whether the source tokenizer needs the tag: train.tag_synthetic and a synthetic corpus."""
    return config.train.tag_synthetic and any(extra.synthetic for extra in config.data.corpora)


def extra_data_config(data: DataConfig, extra: ExtraCorpus) -> DataConfig:
    """The data section an extra's source class reads: the main one with the entry's source settings."""
    settings = {key: getattr(extra, key) for key in _SOURCE_SETTINGS}
    return dataclasses.replace(data, **settings, corpora=())


_SOURCE_SETTINGS = tuple(
    item.name for item in dataclasses.fields(ExtraCorpus) if item.name not in ("weight", "synthetic")
)


def prepare_extra_corpora(
    config: Config, main: PreparedCorpus, data_dir: Path, log: Log = print
) -> tuple[PreparedExtra, ...]:
    """Prepares (or reuses) every entry of `data.corpora` against the main corpus's held-out splits."""
    if not config.data.corpora:
        return ()
    held_out = _held_out_hashes(main)
    held_out_digest = hashlib.sha256(
        "".join(file_sha256(path) for path in (main.dev, main.test)).encode()
    ).hexdigest()
    return tuple(
        prepare_extra(config, index, extra, main, held_out, held_out_digest, Path(data_dir), log)
        for index, extra in enumerate(config.data.corpora, start=1)
    )


def _held_out_hashes(main: PreparedCorpus) -> set[bytes]:
    """The hashes of every source and target sentence of the main dev and test splits."""
    return {
        text_hash(side.encode("utf-8"))
        for line in read_lines((main.dev, main.test))
        for side in line.split("\t")[:2]
    }


def prepare_extra(
    config: Config,
    index: int,
    extra: ExtraCorpus,
    main: PreparedCorpus,
    held_out: set[bytes],
    held_out_digest: str,
    data_dir: Path,
    log: Log = print,
) -> PreparedExtra:
    """One extra corpus: cleaned, deduplicated, held-out sentences dropped, written and reported."""
    data = extra_data_config(config.data, extra)
    source = corpus_source(data)
    source.check()
    for warning in source.warnings():
        log(f"Warning: data.corpora[{index - 1}]: {warning}")
    inputs = {
        "format_version": FORMAT_VERSION,
        "max_chars": data.max_chars,
        "source": source.identity(),
        "held_out": held_out_digest,
    }
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    name = CORPUS_FOLDERS[data.corpus](data)
    directory = main.directory / f"extra-{name}-{fingerprint[:10]}"
    describe = {"weight": extra.weight, "synthetic": extra.synthetic}
    with exclusive_lock(main.directory / f".{directory.name}.lock", f"the corpus {directory}", log):
        if _is_up_to_date(directory, fingerprint):
            report = {**json.loads((directory / "report.json").read_text(encoding="utf-8")), **describe}
            log(f"Reusing the extra corpus {index} in {directory} ({report['pairs']:,} pairs)")
            return PreparedExtra(index, name, extra, directory, report)
        staging = Path(tempfile.mkdtemp(dir=main.directory, prefix=".staging-extra-"))
        try:
            tally, written = _write_pairs(source.read(data_dir, log), data.max_chars, held_out, staging)
            if not written["pairs"]:
                raise ValueError(
                    f"No valid pair remains in data.corpora[{index - 1}] ({source.describe()}): "
                    f"{tally.read:,} lines read, bad {_bad_counts(tally)}, "
                    f"{written['held_out_overlap']:,} in the main corpus's dev or test split"
                )
            report = {
                "source": source.describe(),
                "read": tally.read,
                "bad": {
                    reason: {"count": tally.bad[reason], "locations": tally.locations[reason]}
                    for reason in tally.bad
                },
                **written,
            }
            _write_json(staging / "report.json", report)
            manifest = {
                "fingerprint": fingerprint,
                "inputs": inputs,
                "sha256": file_sha256(staging / "train.tsv"),
            }
            _write_json(staging / "manifest.json", manifest)
            shutil.rmtree(directory, ignore_errors=True)
            os.replace(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    report = {**report, **describe}
    log(
        f"Extra corpus {index} from {report['source']}: {report['read']:,} lines read; bad "
        f"{_bad_counts(tally)}; duplicates {report['duplicates']:,}; in the main dev/test splits "
        f"{report['held_out_overlap']:,}; kept {report['pairs']:,} pairs in {directory}"
    )
    return PreparedExtra(index, name, extra, directory, report)


def _write_pairs(records, max_chars: int, held_out: set[bytes], directory: Path) -> tuple[Tally, dict]:
    """Validates the records and writes the kept pairs to `directory/train.tsv`, in reading order."""
    tally, seen = Tally(), set()
    counts = {"duplicates": 0, "held_out_overlap": 0, "pairs": 0}
    with open(directory / "train.tsv", "wb") as out:
        for record in records:
            tally.read += 1
            problem, pair = validate_pair(record, max_chars)
            if problem:
                tally.reject(problem, record.location)
                continue
            source, target = (side.encode("utf-8") for side in pair)
            hashes = text_hash(source), text_hash(target)
            if hashes[0] in held_out or hashes[1] in held_out:
                counts["held_out_overlap"] += 1
            elif hashes in seen:
                counts["duplicates"] += 1
            else:
                seen.add(hashes)
                out.write(b"%s\t%s\n" % (source, target))
                counts["pairs"] += 1
    return tally, counts


def _bad_counts(tally: Tally) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in tally.bad.items())


def _is_up_to_date(directory: Path, fingerprint: str) -> bool:
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    train = directory / "train.tsv"
    return (
        manifest.get("fingerprint") == fingerprint
        and (directory / "report.json").is_file()
        and train.is_file()
        and file_sha256(train) == manifest.get("sha256")
    )


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
