"""A file of translated lines written resumably: `attend backtranslate` (`translation TAB line`) and
`attend distill` (`line TAB translation`) both write one.

Each non-blank input line, normalised as the corpus cleaner does, becomes one output line: the line
and its translation (normalised too, so that a tab or newline in it cannot break the TSV), in the
column order asked for. Blank lines are skipped and counted.

Resumable: the output is written a batch at a time, flushed and fsynced, so a killed run leaves
whole lines plus at most one partial line. Started again, the partial line is cut away, the whole
lines are checked against the input (their input column must be its first lines) and that many
input lines are skipped; nothing is written twice. Batches are anchored to line numbers (batch b
holds the non-blank lines b·N … b·N + N − 1) and the decoder is told b, so that a sampling decoder
seeded by it writes the same lines as a run that was never stopped, given the same batch size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.data.corpus import normalize_text
from app.progress import progress

READ_BLOCK = 1 << 20


class Decoder(Protocol):
    """Translates one batch; `batch_index` seeds the draws of a sampling decoder."""

    def __call__(self, texts: list[str], batch_index: int) -> list[str]: ...


@dataclass(frozen=True)
class TranslationFileReport:
    """What one call found and did."""

    path: Path
    resumed_at: int  # complete lines that the output already held
    written: int  # lines this call wrote
    blank: int  # blank input lines skipped

    @property
    def lines(self) -> int:
        return self.resumed_at + self.written


def complete_lines(out: Path) -> int:
    """The whole lines of `out` (0 where it does not exist); a partial last line, left by a run killed
    mid-write, is cut away first."""
    if not out.exists():
        return 0
    lines = whole_end = size = 0
    with open(out, "r+b") as handle:
        for block in iter(lambda: handle.read(READ_BLOCK), b""):
            lines += block.count(b"\n")
            last = block.rfind(b"\n")
            whole_end = size + last + 1 if last >= 0 else whole_end
            size += len(block)
        if whole_end < size:
            handle.truncate(whole_end)
            handle.flush()
            os.fsync(handle.fileno())
    return lines


def write_translations(
    lines: Iterable[str],
    decoder: Decoder,
    out: Path,
    *,
    translation_first: bool,
    batch_size: int = 64,
    total: int | None = None,
    description: str = "Translating",
    log: Callable[[str], object] = print,
) -> TranslationFileReport:
    """Writes (or completes) `out`: `translation TAB line` (`translation_first`) or `line TAB
    translation` for each non-blank line of `lines`. `total`: the input's line count, for the
    progress bar's ETA."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = complete_lines(out)
    existing = _existing_inputs(out, column=1 if translation_first else 0)
    counts = {"blank": 0, "sentences": 0, "written": 0}
    sentences = _non_blank(lines, counts)
    with (
        open(out, "a", encoding="utf-8", newline="\n") as handle,
        progress(total=total, description=description, unit="lines") as bar,
    ):
        for batch_index, batch in enumerate(_batches(sentences, batch_size)):
            first = batch_index * batch_size
            for row in range(min(len(batch), max(done - first, 0))):
                _check_resumed(next(existing, None), batch[row], first + row + 1, out)
            start = min(max(done - first, 0), len(batch))
            if start < len(batch):
                translations = decoder(batch, batch_index)  # the whole batch: the same draws as before
                pairs = zip(map(normalize_text, translations[start:]), batch[start:], strict=True)
                rows = pairs if translation_first else ((line, text) for text, line in pairs)
                handle.write("".join(f"{left}\t{right}\n" for left, right in rows))
                handle.flush()
                os.fsync(handle.fileno())  # a line on disk is never translated again
                counts["written"] += len(batch) - start
            bar.update(counts["sentences"] + counts["blank"] - bar.n)  # input lines read so far
    existing.close()
    if done > counts["sentences"]:
        raise ValueError(
            f"{out} already holds {done:,} lines but the input has only {counts['sentences']:,} non-blank "
            "lines: it was made from another input; remove it or choose another --out"
        )
    report = TranslationFileReport(out, done, counts["written"], counts["blank"])
    log(
        f"{out}: {report.lines:,} lines ({report.resumed_at:,} there already, {report.written:,} written); "
        f"{report.blank:,} blank input lines skipped"
    )
    return report


def _non_blank(lines: Iterable[str], counts: dict) -> Iterator[str]:
    """The lines normalised (NFC, whitespace runs and tabs to one space), blank ones counted and left out."""
    for line in lines:
        text = normalize_text(line)
        if text:
            counts["sentences"] += 1
            yield text
        else:
            counts["blank"] += 1


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _existing_inputs(out: Path, column: int) -> Iterator[str]:
    """The input column of the lines already in `out` (read only as far as they are checked)."""
    if not out.exists():
        return
    with open(out, encoding="utf-8", newline="\n") as handle:
        for line in handle:
            yield line.rstrip("\n").split("\t", 1)[column] if "\t" in line else ""


def _check_resumed(written: str | None, sentence: str, number: int, out: Path) -> None:
    """A line already written must pair with the same input line, or the output belongs elsewhere."""
    if written != sentence:
        raise ValueError(
            f"{out} line {number} does not pair with non-blank input line {number} ({written!r} is not "
            f"{sentence!r}): it was made from another input; remove it or choose another --out"
        )
