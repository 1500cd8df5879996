"""`attend score`: how likely an exported model finds given translations (forced decoding through
the SavedModel's `score` signature, as another program would call it).

Input lines are `source TAB target`; each gives one output line `total TAB normalised`: the sum of
the target pieces' log-probabilities (end token included) and that sum per piece. Uses: filtering a
noisy corpus (drop the lowest normalised scores), reranking an n-best list (by the total). Lines
are read and answered in batches as they arrive; on a terminal a bar on stderr counts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from pathlib import Path

from app.progress import progress


def split_pair(line: str, number: int) -> tuple[str, str]:
    """`source TAB target` → the two texts; a line without a tab is refused by its number."""
    source, tab, target = line.partition("\t")
    if not tab:
        raise ValueError(f"line {number}: expected `source<TAB>target`, found no tab")
    return source, target.split("\t")[0]  # a third column (a score, an id) is ignored


def score_lines(export_dir: Path, lines: Iterable[str], batch_size: int = 64) -> Iterator[str]:
    """`total TAB normalised` per input line, in input order, with 4 decimals."""
    for scores in score_pairs(export_dir, lines, batch_size):
        yield "\t".join(f"{value:.4f}" for value in scores)


def score_pairs(
    export_dir: Path, lines: Iterable[str], batch_size: int = 64
) -> Iterator[tuple[float, float]]:
    """(total, normalised) log-probability per `source TAB target` line, through the export's `score`."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    signatures = tf.saved_model.load(str(export_dir)).signatures
    if "score" not in signatures:
        raise ValueError(
            f"The SavedModel at {export_dir} has no score signature (exported by an older version); "
            "export it again with `attend export RUN_DIR`"
        )
    score = signatures["score"]
    total = len(lines) if isinstance(lines, Sized) else None
    with progress(total=total, description="Scoring", leave=False) as bar:
        for batch in _pair_batches(lines, batch_size):
            sources, targets = zip(*batch, strict=True)
            out = score(source=tf.constant(sources, tf.string), target=tf.constant(targets, tf.string))
            bar.update(len(batch))
            bar.clear()  # the caller prints these lines; the bar is drawn again below them
            yield from zip(
                out["score"].numpy().tolist(), out["normalized_score"].numpy().tolist(), strict=True
            )
            bar.refresh()


def _pair_batches(lines: Iterable[str], size: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        batch.append(split_pair(line, number))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
