"""`attend export`: a trained run's Translator, rebuilt from its best weights, saved as a
SavedModel (staged, checked in a fresh process, then renamed into place): into the run's
`export/` folder, or as the next version of a TensorFlow Serving model base."""

from __future__ import annotations

import json
from pathlib import Path

from app.model_base import ModelBase, default_model_name
from app.run import RunDir
from app.translator import load_translator, save_translator

# Any text serves the reload check (it compares the reloaded export with this process's translations).
CHECK_SENTENCES = ["Hola.", "", "Y lloró Jesús.", "In the beginning God created the heavens and the earth."]


def export_run(
    run_dir: Path,
    check_sentences: list[str] | None = None,
    log=print,
    force: bool = False,
    model_base: Path | None = None,
    name: str | None = None,
    xla: bool = False,
    shortlist: bool | None = None,
    data_dir: Path = Path("data"),
) -> Path:
    """Exports a trained run, holding the run's lock while it writes; returns the SavedModel folder.

    Into `RUN/export/` by default; with `model_base`, as the next version `BASE/NAME/<N>/` (N one
    above the highest there), invisible to servers until it is checked and renamed into place.
    Refuses a run without trained weights, and a run whose training failed (diverged) unless
    `force`: then the last good checkpoint is exported, and the model card says what failed.
    `xla`: `translate_ids`, and `serving_default` for small batches, run XLA-compiled searches
    (`Translator`; stock TF Serving then needs XLA). `shortlist` overrides the run's
    `decode.shortlist`, whose lexical table is learnt from the train split in `data_dir`."""
    run = RunDir(run_dir)
    with run.lock():
        failure = run.failure()
        if failure and not force:
            raise ValueError(
                f"{run}'s training failed ({failure['message']}); nothing is exported. "
                f"`attend export --force {run}` exports its last good checkpoint"
                + (f" (epoch {failure['last_good']['epoch']})" if failure.get("last_good") else "")
            )
        published = ModelBase(model_base, name or default_model_name(run.config())) if model_base else None
        translator = load_translator(run, xla=xla, shortlist=shortlist, data_dir=data_dir)
        card = {**model_card_of(run, log), **({"training_failure": failure} if failure else {})}
        card["export"] = {"xla": xla, "run": str(run), "shortlist": shortlist_record(translator)}
        sentences = check_sentences or CHECK_SENTENCES
        if published is None:
            return save_translator(translator, run.export_dir, card, sentences, log=log)
        with published.next_version() as (version, directory):
            card["export"].update(model_name=published.name, version=version)
            save_translator(translator, directory, card, sentences, log=log)
        log(f"Published {run} as version {version} of model {published.name!r} in {model_base}")
        return directory


def shortlist_record(translator) -> dict | None:
    """The model card's account of the shortlist the export decodes over (None: the whole vocabulary):
    the sizes of its table, which holds fewer frequent pieces than asked where fewer occur in training."""
    if translator.shortlist is None:
        return None
    frequent, translations = translator.shortlist
    return {"frequent": int(frequent.shape[0]), "per_source": int(translations.shape[1])}


# What an export adds to the run's card (a rebuilt card starts from the run's own part).
EXPORT_ONLY_KEYS = ("export", "training_failure")


def model_card_of(run: RunDir, log=print) -> dict:
    """The run's model card. A damaged one (empty, cut short by a full disk) is rebuilt from what the
    folder still holds and written back: the last export's copy if there is one, else the config and
    the final metrics; the note says what was lost."""
    try:
        return run.model_card()
    except ValueError as damaged:
        card, source = rebuilt_model_card(run)
        run.write_model_card(card)
        log(f"Note: {damaged}; rebuilt it from {source}")
        return card


def rebuilt_model_card(run: RunDir) -> tuple[dict, str]:
    """`(card, what it was rebuilt from)` for a run whose `model_card.json` is damaged."""
    try:
        exported = json.loads(run.exported_model_card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        exported = None
    if isinstance(exported, dict):
        card = {key: value for key, value in exported.items() if key not in EXPORT_ONLY_KEYS}
        return card, f"the copy in {run.exported_model_card_path}"
    config = run.config()
    try:
        metrics = run.metrics()
    except ValueError:
        metrics = None
    sources = " and ".join([str(run.config_path)] + ([str(run.metrics_path)] if metrics else []))
    card = {
        "name": config.name,
        "source_language": config.data.source_language,
        "target_language": config.data.target_language,
        "config": config.to_dict(),
        "metrics": {key: value for key, value in (metrics or {}).items() if key != "history"},
        "best_checkpoint": run.best_score(),
        "rebuilt": f"from {sources}: the damaged card's data report and tokenizer checks are lost",
    }
    return card, f"{sources} (its data report is lost)"
