"""`attend backtranslate`: target-language sentences → `synthetic_source TAB real_target` pairs, made by
a run trained in the reverse direction (Sennrich et al., 2016), to add to a forward run's training.

Each non-blank input line, normalised as the corpus cleaner does, becomes one output line: its
translation by the reverse run, a tab, the line itself. Blank lines are skipped (and counted): a
pair with an empty side would only be dropped by `attend prepare`. The translation comes from the
run's export, as another program would call it: drawn by its `sample` signature (`--sample`,
Edunov et al., 2018: sampled sources teach more than beam ones), or searched by `serving_default`
(the run's own `decode.beam_width`); a `--beam` width other than the export's rebuilds the run's
Translator with that width, as `attend evaluate --beam` does.

Resumable: the output is written a batch at a time, flushed and fsynced, so a killed run leaves
whole lines plus at most one partial line. Started again, the partial line is cut away, the whole
lines are checked against the input (their targets must be its first lines) and that many input
lines are skipped; nothing is written twice. Batches are anchored to line numbers (batch b holds
the non-blank lines b·N … b·N + N − 1) and batch b is drawn with seed + b, so that a resumed run
writes the same lines as one that was never stopped, given the same --batch-size and --seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.data.corpus import normalize_text
from app.progress import progress
from app.run import RunDir

READ_BLOCK = 1 << 20


class Decoder(Protocol):
    """Translates one batch; `batch_index` seeds the draws of a sampling decoder."""

    def __call__(self, texts: list[str], batch_index: int) -> list[str]: ...


@dataclass(frozen=True)
class BacktranslationReport:
    """What one `backtranslate` call found and did."""

    path: Path
    resumed_at: int  # complete lines that the output already held
    written: int  # lines this call wrote
    blank: int  # blank input lines skipped

    @property
    def lines(self) -> int:
        return self.resumed_at + self.written


class ExportDecoder:
    """One signature of the export: `serving_default`, or `sample` with its seed advanced per batch."""

    def __init__(self, export_dir: Path, sampling: dict | None = None):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

        name = "sample" if sampling is not None else "serving_default"
        signatures = tf.saved_model.load(str(export_dir)).signatures
        if name not in signatures:
            raise ValueError(
                f"The SavedModel at {export_dir} has no {name} signature (exported by an older version); "
                "export it again with `attend export RUN_DIR`"
            )
        self._signature, self._sampling = signatures[name], sampling

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        import tensorflow as tf

        extra = {}
        if self._sampling is not None:
            extra = {**self._sampling, "seed": self._sampling["seed"] + batch_index}
        out = self._signature(text=tf.constant(texts, tf.string), **extra)
        return [text.decode("utf-8") for text in out["translation"].numpy()]


class RebuiltBeamDecoder:
    """The run's Translator rebuilt with another beam width (the export's search is fixed)."""

    def __init__(self, run_dir: Path, beam: int, data_dir: Path):
        from app.translator import load_translator

        self._translator = load_translator(RunDir(run_dir), beam_width=beam, data_dir=data_dir)

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        return self._translator.translate_texts(texts, batch_size=len(texts))


def export_beam_width(export_dir: Path) -> int:
    """The beam width of the export's `serving_default` (its run's `decode.beam_width`)."""
    card = json.loads((export_dir / "model_card.json").read_text(encoding="utf-8"))
    return int(card["config"]["decode"]["beam_width"])


def make_decoder(
    model: Path,
    export_dir: Path,
    sampling: dict | None = None,
    beam: int | None = None,
    data_dir: Path = Path("data"),
) -> Decoder:
    """`sampling` (the `sample` signature's seed, temperature and topk tensors) draws; `beam` K searches
    with width K: the export's serving_default where K is its width, else the run rebuilt."""
    if sampling is not None and beam is not None:
        raise ValueError("--sample and --beam cannot be combined; choose one")
    if beam is None or beam == export_beam_width(export_dir):
        return ExportDecoder(export_dir, sampling)
    if not RunDir(model).best_weights.is_file():
        width = export_beam_width(export_dir)
        raise ValueError(
            f"--beam {beam} differs from the export's decode.beam_width ({width}) and {model} is not a "
            f"trained run folder to rebuild the search from; give the run folder, or --beam {width}"
        )
    return RebuiltBeamDecoder(model, beam, data_dir)


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


def backtranslate(
    lines: Iterable[str],
    decoder: Decoder,
    out: Path,
    batch_size: int = 64,
    total: int | None = None,
    log: Callable[[str], object] = print,
) -> BacktranslationReport:
    """Writes (or completes) `out`: `translation TAB line` for each non-blank line of `lines`.
    `total`: the input's line count, for the progress bar's ETA."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = complete_lines(out)
    existing = _existing_targets(out)
    counts = {"blank": 0, "sentences": 0, "written": 0}
    sentences = _non_blank(lines, counts)
    with (
        open(out, "a", encoding="utf-8", newline="\n") as handle,
        progress(total=total, description="Back-translating", unit="lines") as bar,
    ):
        for batch_index, batch in enumerate(_batches(sentences, batch_size)):
            first = batch_index * batch_size
            for row in range(min(len(batch), max(done - first, 0))):
                _check_resumed(next(existing, None), batch[row], first + row + 1, out)
            start = min(max(done - first, 0), len(batch))
            if start < len(batch):
                translations = decoder(batch, batch_index)  # the whole batch: the same draws as before
                pairs = zip(translations[start:], batch[start:], strict=True)
                handle.write("".join(f"{normalize_text(source)}\t{target}\n" for source, target in pairs))
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
    report = BacktranslationReport(out, done, counts["written"], counts["blank"])
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


def _existing_targets(out: Path) -> Iterator[str]:
    """The target column of the lines already in `out` (read only as far as they are checked)."""
    if not out.exists():
        return
    with open(out, encoding="utf-8", newline="\n") as handle:
        for line in handle:
            yield line.rstrip("\n").partition("\t")[2]


def _check_resumed(target: str | None, sentence: str, number: int, out: Path) -> None:
    """A line already written must pair with the same input line, or the output belongs elsewhere."""
    if target != sentence:
        raise ValueError(
            f"{out} line {number} does not pair with non-blank input line {number} ({target!r} is not "
            f"{sentence!r}): it was made from another input; remove it or choose another --out"
        )
