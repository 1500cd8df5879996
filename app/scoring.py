"""Scores of translations: corpus BLEU and chrF the standard way (sacreBLEU), multi-reference,
and BLEU by source length. The dev monitor of training and `attend evaluate` both use these.
Pronunciations (the g2p task) are scored instead by word and phone error rates (`phone_error_rates`).

sacreBLEU computes both scores from detokenized text with its own tokenisation (13a for BLEU),
so figures are comparable with published ones; its signature says exactly how. When a source
occurs several times in a split with different targets, all of them are references.
"""

from __future__ import annotations

from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 30), (31, 40), (41, 50), (51, 10_000))


def read_references(tsv_path: Path) -> tuple[list[str], list[list[str]]]:
    """Unique sources in file order, each with every target it has in the file.

    A file to score must be whole and plain: a line that is not UTF-8, or has not exactly two columns
    (a third would be silently ignored), stops it, naming the line."""
    if tsv_path.is_dir():
        raise ValueError(f"{tsv_path} is a directory; expected a file of source<TAB>target lines")
    references: dict[str, list[str]] = {}
    with open(tsv_path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n").removeprefix("\ufeff" if number == 1 else "")
            except UnicodeDecodeError as error:
                where = f"{tsv_path}:{number}"
                raise ValueError(f"{where}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
            fields = line.split("\t")
            if len(fields) != 2:
                found = f", found {len(fields)} columns" if len(fields) > 2 else ""
                raise ValueError(f"{tsv_path}:{number}: expected source<TAB>target{found}")
            references.setdefault(fields[0], []).append(fields[1])
    if not references:
        raise ValueError(f"{tsv_path} has no lines to score; expected source<TAB>target lines")
    return list(references), list(references.values())


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """sacreBLEU corpus BLEU and chrF; `references[i]` lists the references of sentence i."""
    most = max((len(refs) for refs in references), default=1)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, streams)
    chrf_score = chrf.corpus_score(hypotheses, streams)
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "exact_match": round(exact_match(hypotheses, references), 2),
        "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
        "bleu_detail": str(bleu_score),
    }


def exact_match(hypotheses: list[str], references: list[list[str]]) -> float:
    """Percentage of hypotheses equal to one of their references, surrounding whitespace stripped
    (0.0 for no sentences); the score of tasks with one right answer, such as dates → ISO 8601."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    hits = sum(
        hypothesis.strip() in {reference.strip() for reference in refs}
        for hypothesis, refs in zip(hypotheses, references, strict=True)
    )
    return 100.0 * hits / len(hypotheses) if hypotheses else 0.0


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    return corpus_scores(hypotheses, references)["bleu"]


BOOTSTRAP_SAMPLES = 1000


def bleu_with_confidence(hypotheses: list[str], references: list[list[str]]) -> tuple[float, float]:
    """Corpus BLEU and the half-width of its 95 % confidence interval, by sacreBLEU's bootstrap
    resampling of the sentences (seeded: SACREBLEU_SEED, default 12345): how far the score of another
    sample of as many sentences could lie. About 1.96 standard errors."""
    if not hypotheses:
        return 0.0, 0.0
    most = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    score = BLEU().corpus_score(hypotheses, streams, n_bootstrap=BOOTSTRAP_SAMPLES)
    return round(score.score, 2), round(float(score._ci), 2)  # `_ci`: set by n_bootstrap (sacreBLEU 2)


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[list[str]]) -> list[dict]:
    """Corpus BLEU within source-length buckets (in words), as in Bahdanau et al.'s Figure 2."""
    rows = []
    for low, high in LENGTH_BUCKETS:
        chosen = [i for i, source in enumerate(sources) if low <= len(source.split()) <= high]
        label = f"{low}-{high}" if high < 10_000 else f"{low}+"
        bleu = (
            corpus_bleu([hypotheses[i] for i in chosen], [references[i] for i in chosen]) if chosen else 0.0
        )
        rows.append({"bucket": label, "sentences": len(chosen), "bleu": bleu})
    return rows


def edit_distance(hypothesis: list[str], reference: list[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions, deletions cost 1)."""
    previous = list(range(len(reference) + 1))
    for row, token in enumerate(hypothesis, start=1):
        current = [row]
        for column, wanted in enumerate(reference, start=1):
            current.append(
                min(previous[column] + 1, current[column - 1] + 1, previous[column - 1] + (token != wanted))
            )
        previous = current
    return previous[-1]


def phone_error_rates(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Word and phone error rates (percent) of pronunciations, the measures of the g2p papers.

    A word is right when its output, as whitespace-separated phones, equals any of its references
    (WER counts the wrong ones). Its phone errors are the edit distance to its closest reference
    (the first of the closest, in file order), and PER sums those over all words, divided by the sum
    of those closest references' lengths (Bisani & Ney 2008's aggregation, not a mean of per-word
    rates). An empty output counts every phone of its reference as an error.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    wrong = errors = phones = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        output = hypothesis.split()
        candidates = [reference.split() for reference in refs]
        distance, closest = min(
            ((edit_distance(output, reference), reference) for reference in candidates),
            key=lambda pair: pair[0],
        )
        wrong += distance > 0
        errors += distance
        phones += len(closest)
    words = len(hypotheses)
    return {
        "wer": round(100.0 * wrong / words, 2) if words else 0.0,
        "per": round(100.0 * errors / phones, 2) if phones else 0.0,
        "words": words,
        "wrong_words": wrong,
        "phone_errors": errors,
        "reference_phones": phones,
    }
