"""Large parallel corpora made from a small real one, to measure and test preparation at scale offline.

`write_recombined_tsv` joins 1 to 3 randomly drawn aligned pairs (each side with a space), so the
result stays a valid translation pair, with the real corpus's characters and sentence lengths, and
with the exact duplicates (single pairs drawn twice) and shared sides that preparation must handle.
Seeded, streamed to disk: N pairs cost the seed pairs' memory, not N.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from app.data.corpus import Pair, normalize_text

WRITE_BATCH = 10_000  # lines joined per write


def seed_pairs(pairs: Iterable[tuple[str, str]]) -> list[Pair]:
    """The usable (both sides non-empty after normalisation, no tab) pairs of a source, normalised."""
    cleaned = ((normalize_text(source), normalize_text(target)) for source, target in pairs)
    return [(source, target) for source, target in cleaned if source and target]


def write_recombined_tsv(
    pairs: Sequence[Pair],
    path: Path,
    count: int,
    seed: int = 0,
    most_joined: int = 3,
) -> Path:
    """Writes `count` lines of `source<TAB>target`, each joining 1 to `most_joined` drawn pairs."""
    if not pairs:
        raise ValueError("write_recombined_tsv needs at least one seed pair to recombine")
    if count < 0 or most_joined < 1:
        raise ValueError(f"count must be >= 0 and most_joined >= 1, not {count} and {most_joined}")
    generator = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for start in range(0, count, WRITE_BATCH):
            lines = (
                _recombined(pairs, generator, most_joined) for _ in range(min(WRITE_BATCH, count - start))
            )
            handle.write("".join(lines))
    return path


def _recombined(pairs: Sequence[Pair], generator: random.Random, most_joined: int) -> str:
    chosen = [pairs[generator.randrange(len(pairs))] for _ in range(generator.randint(1, most_joined))]
    return " ".join(source for source, _ in chosen) + "\t" + " ".join(target for _, target in chosen) + "\n"
