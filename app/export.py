"""`attend export`: a trained run's Translator, rebuilt from its best weights, saved as a
SavedModel (staged, checked in a fresh process, then renamed into place): into the run's
`export/` folder (or `--out`), or as the next version of a TensorFlow Serving model base.
With `--ensemble` / `--ensemble-last`, the SavedModel decodes with several members at once (their
log-probabilities averaged at every step: `app.models.ensemble`), the model card listing them.

Into the staged folder go, before the check: TF Serving's warm-up records (`app.warmup`), and the
op contract: every op of every exported function is a core TensorFlow op or a tensorflow-text op
(so that any TF Serving build that links TF Text loads it), the latter listed in the model card
as `export.required_ops`."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from tensorflow.core.protobuf import saved_model_pb2

from app.model_base import ModelBase, default_model_name
from app.processes import run_python_for_json
from app.run import RunDir
from app.translator import XLA_MAX_BATCH, XLA_MIN_SOURCE_LENGTH, load_translator, save_translator
from app.warmup import dev_sentences, write_translator_warmup

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
    ensemble: Sequence[Path] = (),
    ensemble_last: int | None = None,
    out: Path | None = None,
) -> Path:
    """Exports a trained run, holding the run's lock while it writes; returns the SavedModel folder.

    Into `RUN/export/` by default, or `out`; with `model_base`, as the next version `BASE/NAME/<N>/`
    (N one above the highest there), invisible to servers until it is checked and renamed into place.
    `ensemble` (other run folders: their best weights join the run's) or `ensemble_last` (the run's
    last N kept epochs) export an ensemble (`ensemble_members`); decoding follows the run's config.
    Refuses a run without trained weights, and a run whose training failed (diverged) unless
    `force`: then the last good checkpoint is exported, and the model card says what failed.
    `xla`: `translate_ids`, and `serving_default` for small batches, run XLA-compiled searches
    (`Translator`; stock TF Serving then needs XLA). `shortlist` overrides the run's
    `decode.shortlist`, whose lexical table is learnt from the train split in `data_dir`."""
    run = RunDir(run_dir)
    if out is not None and model_base is not None:
        raise ValueError("--out and --model-base name two places to export to; give one")
    with run.lock():
        failure = run.failure()
        if failure and not force:
            raise ValueError(
                f"{run}'s training failed ({failure['message']}); nothing is exported. "
                f"`attend export --force {run}` exports its last good checkpoint"
                + (f" (epoch {failure['last_good']['epoch']})" if failure.get("last_good") else "")
            )
        published = ModelBase(model_base, name or default_model_name(run.config())) if model_base else None
        ensembled = bool(ensemble) or ensemble_last is not None
        members = ensemble_members(run, ensemble, ensemble_last) if ensembled else []
        translator = load_translator(
            run,
            xla=xla,
            shortlist=shortlist,
            data_dir=data_dir,
            members=[(member.run.config(), member.weights) for member in members],
        )
        card = {**model_card_of(run, log), **({"training_failure": failure} if failure else {})}
        card["export"] = {"xla": xla, "run": str(run), "shortlist": shortlist_record(translator)}
        if members:
            card["export"]["ensemble"] = ensemble_record(members)
            card.pop("metrics", None)  # the run's scores are not the ensemble's: evaluate the export
            log(f"Ensemble of {len(members)}: " + ", ".join(map(describe_member, members)))
        sentences = check_sentences or CHECK_SENTENCES
        config = run.config()
        warmup = dev_sentences(data_dir / config.corpus_name / "dev.tsv") or sentences
        limit = config.decode.max_input_tokens
        if published is None:
            extras = export_extras(translator, card, warmup, xla=xla, max_input_tokens=limit, log=log)
            directory = out or run.export_dir
            directory.parent.mkdir(parents=True, exist_ok=True)
            return save_translator(translator, directory, card, sentences, log=log, extras=extras)
        with published.next_version() as (version, directory):
            card["export"].update(model_name=published.name, version=version)
            extras = export_extras(
                translator, card, warmup, xla=xla, max_input_tokens=limit, model_name=published.name, log=log
            )
            save_translator(translator, directory, card, sentences, log=log, extras=extras)
        log(f"Published {run} as version {version} of model {published.name!r} in {model_base}")
        return directory


# === Ensembles ===
VOCABULARY_FILES = ("source.model", "source.vocab", "target.model", "target.vocab")  # in RUN/vocab/


class Member(NamedTuple):
    """One model of an ensemble export: a run folder's weights (its best, or a kept epoch's)."""

    run: RunDir
    weights: Path
    epoch: int | None  # the epoch the weights are from, where the run recorded it


def ensemble_members(run: RunDir, others: Sequence[Path] = (), last: int | None = None) -> list[Member]:
    """The members of `run`'s ensemble export: its best weights and each of the `others` runs' best
    (`--ensemble`), or its `last` kept epochs' weights (`--ensemble-last`, `train.keep_last_epochs`).
    Refuses an untrained member, fewer kept epochs than asked, and a run whose vocabulary files are
    not byte for byte the run's (one id would mean another piece to each member)."""
    if others and last is not None:
        raise ValueError("--ensemble and --ensemble-last exclude each other; give one")
    if last is not None:
        kept = run.kept_epochs()
        if last < 1 or len(kept) < last:
            available = ", ".join(map(str, kept)) or "none"
            raise ValueError(
                f"--ensemble-last {last}: {run} keeps the weights of {len(kept)} epoch(s) (epochs: "
                f"{available}); give 1 to {len(kept)}, or keep more with train.keep_last_epochs"
            )
        return [Member(run, weights, epoch) for epoch, weights in list(kept.items())[-last:]]
    members = [Member(run, run.best_weights, _best_epoch(run))]
    for path in others:
        other = RunDir(path)
        other.require_trained()
        check_same_vocabularies(run, other)
        members.append(Member(other, other.best_weights, _best_epoch(other)))
    return members


def check_same_vocabularies(run: RunDir, other: RunDir) -> None:
    """ValueError naming `other` and the file where its vocabularies differ from `run`'s."""
    for name in VOCABULARY_FILES:
        mine, theirs = run.vocab_dir / name, other.vocab_dir / name
        if not theirs.is_file() or mine.read_bytes() != theirs.read_bytes():
            how = "is missing" if not theirs.is_file() else f"differs from {mine}"
            raise ValueError(
                f"{other} cannot join {run}'s ensemble: its vocabulary {theirs} {how}; members must share "
                "the vocabularies byte for byte (runs trained on one prepared corpus, or one run's epochs: "
                "--ensemble-last N)"
            )


def _best_epoch(run: RunDir) -> int | None:
    return (run.best_score() or {}).get("epoch")


def describe_member(member: Member) -> str:
    return f"{member.run} ({member.weights.name}" + (f", epoch {member.epoch})" if member.epoch else ")")


def ensemble_record(members: list[Member]) -> dict:
    """The model card's account of an ensemble: how its members combine, and each member."""
    return {
        "combination": "mean of the members' log-probabilities at every step, renormalised",
        "members": [
            {"run": str(member.run.path), "weights": str(member.weights), "epoch": member.epoch}
            for member in members
        ],
    }


def shortlist_record(translator) -> dict | None:
    """The model card's account of the shortlist the export decodes over (None: the whole vocabulary):
    the sizes of its table, which holds fewer frequent pieces than asked where fewer occur in training."""
    if translator.shortlist is None:
        return None
    frequent, translations = translator.shortlist
    return {"frequent": int(frequent.shape[0]), "per_source": int(translations.shape[1])}


def export_extras(
    translator,
    card: dict,
    sentences: list[str],
    *,
    xla: bool,
    max_input_tokens: int,
    model_name: str = "",
    log=print,
) -> Callable[[Path], None]:
    """What `save_translator` adds to the staged SavedModel: the warm-up records (each signature,
    and with `xla` every padded shape of the compiled search, whose source lengths go up to
    `max_input_tokens`), and the op contract checked, its tensorflow-text ops written in the card
    (`export.required_ops`)."""

    def write(staging: Path) -> None:
        requests = write_translator_warmup(
            staging,
            translator,
            sentences,
            xla_max_batch=XLA_MAX_BATCH[translator.decoding_strategy.name] if xla else None,
            min_length=XLA_MIN_SOURCE_LENGTH,
            max_input_tokens=max_input_tokens,
            model_name=model_name,
            log=log,
        )
        signatures = sorted({request.signature_name for request in requests})
        log(f"Wrote {len(requests)} warm-up requests ({', '.join(signatures)})")
        card["export"]["required_ops"] = checked_required_ops(staging)

    return write


# === The op contract ===
# Runs in a fresh interpreter: the ops a bare `tensorflow` registers, then those tensorflow-text adds.
_OP_REGISTRY = """
import json
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session

def registered():
    ops = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
    return {op.name for op in ops.op}

core = registered()
import tensorflow_text  # noqa: E402,F401
print(json.dumps({"core": sorted(core), "text": sorted(registered() - core)}))
"""


@functools.cache  # the registry of an installed TensorFlow does not change while a process runs
def op_registry() -> tuple[frozenset[str], frozenset[str]]:
    """`(core, text)`: the op names a bare `tensorflow` registers, and those tensorflow-text adds."""
    registry = run_python_for_json(["-c", _OP_REGISTRY], "Listing the registered ops")
    return frozenset(registry["core"]), frozenset(registry["text"])


def saved_model_ops(export_dir: Path) -> set[str]:
    """Every op type in a SavedModel: its graph's nodes and every library function's nodes (calls
    of the library's own functions are not ops, and are left out)."""
    saved_model = saved_model_pb2.SavedModel.FromString((export_dir / "saved_model.pb").read_bytes())
    ops: set[str] = set()
    for graph in saved_model.meta_graphs:
        library = graph.graph_def.library
        functions = {function.signature.name for function in library.function}
        nodes = [*graph.graph_def.node, *(node for f in library.function for node in f.node_def)]
        ops |= {node.op for node in nodes if node.op not in functions}
    return ops


def op_contract_violations(ops: set[str], core: set[str], text: set[str]) -> list[str]:
    """The ops that are neither core TensorFlow nor tensorflow-text ones (a stock server lacks them)."""
    return sorted(ops - core - text)


def checked_required_ops(export_dir: Path) -> list[str]:
    """The tensorflow-text ops of the export; ValueError where an op outside the contract entered."""
    core, text = op_registry()
    ops = saved_model_ops(export_dir)
    if violations := op_contract_violations(ops, core, text):
        raise ValueError(
            f"the export uses ops that neither TensorFlow nor tensorflow-text registers: {violations}; "
            "TF Serving could not load it"
        )
    return sorted(ops & text)


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
