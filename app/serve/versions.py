"""`ModelVersions`: the versions of one model in a model base, served as TF Serving's default
policy does — the latest version that loads.

A poller looks at the base every `poll_seconds`. A newer version is loaded beside the served
one, warmed up (its `tf_serving_warmup_requests` replayed, as TF Serving does) and swapped in only
then, so no request waits or fails and none meets a cold version; the old version then finishes
its requests in flight and is unloaded. A version stays LOADING until its warm-up is done; one
that fails to load or to warm up is logged and reported by the status API (END with its error),
and the previous one stays served.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tensorflow_serving.apis import get_model_status_pb2

from app.model_base import ModelBase
from app.serve.errors import not_found
from app.serve.servable import Servable


@dataclass
class VersionStatus:
    """One version's state, named as TF Serving's ModelVersionStatus names them."""

    version: int
    state: str  # LOADING | AVAILABLE | UNLOADING | END
    error: str = ""  # why a version failed to load ("" = OK)


class ModelVersions:
    """Loads, polls and swaps the versions of `base`.

    Args:
        base: the model's folder in the model base.
        load: builds a Servable from (version, folder); raises if the version cannot load.
        poll_seconds: how often the base is looked at for new versions (0: never).
        log: one line per event (loaded, swapped, failed).
    """

    def __init__(
        self, base: ModelBase, load: Callable[[int, object], Servable], poll_seconds: float, log=print
    ):
        self.base, self._load, self._poll_seconds, self._log = base, load, poll_seconds, log
        self._lock = threading.Lock()
        self._served: Servable | None = None
        self._statuses: dict[int, VersionStatus] = {}
        self._failed_at: dict[int, float] = {}  # version → its folder's mtime when it failed
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._stopping = False

    # === Lifetime ===
    def start(self) -> Servable:
        """Loads the newest version that loads (ValueError if none does), then starts polling."""
        versions = self.base.versions()
        if not versions:
            raise ValueError(
                f"no version to serve in {self.base} (expected {self.base}/<version>/saved_model.pb); "
                f"publish one with `attend export RUN --model-base {self.base.base} --name {self.base.name}`"
            )
        for version in reversed(versions):
            if self._load_and_swap(version):
                break
        if self._served is None:
            raise ValueError(f"no version of {self.base} loads: {self._statuses[versions[-1]].error}")
        if self._poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
            self._poller.start()
        return self._served

    def stop(self, drain_seconds: float) -> None:
        """Stops polling and unloads the served version once its requests in flight are done."""
        self._stopping = True
        self._stop.set()
        if self._poller:
            self._poller.join()
        with self._lock:
            served, self._served = self._served, None
        if served:
            served.unload(drain_seconds)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll_once()
            except Exception as error:  # noqa: BLE001  (the poller must outlive a bad folder)
                self._log(f"Polling {self.base} failed: {error}")

    def poll_once(self) -> None:
        """Loads and swaps in the newest version if it is newer than the served one."""
        latest = self.base.latest()
        served = self._served
        if (
            latest is None
            or (served is not None and latest <= served.version)
            or not self._worth_trying(latest)
        ):
            return
        self._load_and_swap(latest)

    def _worth_trying(self, version: int) -> bool:
        """A failed version is tried again only after its folder changed."""
        return self._failed_at.get(version) != self._mtime(version)

    def _mtime(self, version: int) -> float:
        try:
            return self.base.version_dir(version).stat().st_mtime
        except OSError:
            return -1.0

    def _load_and_swap(self, version: int) -> bool:
        """Loads and warms up `version` (LOADING meanwhile), then serves it; False if either failed."""
        self._set_status(version, "LOADING")
        started, servable = time.monotonic(), None
        try:
            servable = self._load(version, self.base.version_dir(version))
            requests, seconds = servable.warm_up()
        except Exception as error:  # noqa: BLE001  (any failure: keep serving the previous version)
            step = "load" if servable is None else "warm up"
            if servable is not None:
                servable.unload(0)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            message = f"{'' if servable is None else 'warm-up: '}{type(error).__name__}: {first_line}"
            self._set_status(version, "END", message)
            self._failed_at[version] = self._mtime(version)
            kept = f"; still serving version {self._served.version}" if self._served else ""
            self._log(f"Version {version} of {self.base.name!r} failed to {step} ({message}){kept}")
            return False
        if requests:
            self._log(
                f"Warmed up version {version} of {self.base.name!r}: {requests} requests in {seconds:.1f} s"
            )
        with self._lock:
            previous, self._served = self._served, servable
            self._statuses[version] = VersionStatus(version, "AVAILABLE")
            if previous:
                self._statuses[previous.version] = VersionStatus(previous.version, "UNLOADING")
        self._log(
            f"Serving version {version} of {self.base.name!r} (loaded in {time.monotonic() - started:.1f} s)"
        )
        if previous:
            threading.Thread(target=self._unload, args=(previous,), daemon=True).start()
        return True

    def _set_status(self, version: int, state: str, error: str = "") -> None:
        with self._lock:  # the status API reads them from request threads
            self._statuses[version] = VersionStatus(version, state, error)

    def _unload(self, servable: Servable) -> None:
        servable.unload()
        self._set_status(servable.version, "END")
        self._log(f"Unloaded version {servable.version} of {self.base.name!r}")

    # === Requests ===
    @contextlib.contextmanager
    def servable(self, name: str, version: int | None = None) -> Iterator[Servable]:
        """The version a request addresses (the served one, or `version` while it is served),
        held so that it is not unloaded before the request is answered; NOT_FOUND otherwise."""
        with self._lock:
            served = self._served
            if (
                name != self.base.name
                or served is None
                or (version is not None and version != served.version)
            ):
                request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise not_found(f"Servable not found for request: {request}")
            served.acquire()
        try:
            yield served
        finally:
            served.release()

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """TF Serving's GetModelStatus: every version this server knows of (or the one asked for)."""
        if name != self.base.name:
            raise not_found(f"Could not find any versions of model {name}")
        with self._lock:
            known = dict(self._statuses)
        if version is None:
            return [known[v] for v in sorted(known, reverse=True)]
        if version not in known:
            raise not_found(f"Could not find version {version} of model {name}")
        return [known[version]]

    def status_response(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """`statuses` as TF Serving's GetModelStatusResponse (a failed load: UNKNOWN with its reason)."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.statuses(name, version):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.error_code = 2 if status.error else 0  # tensorflow.error.Code UNKNOWN / OK
            entry.status.error_message = status.error
        return response

    def readiness(self) -> tuple[bool, dict]:
        """`(ready, why)` for an orchestrator's readiness probe: ready while the version a request
        without a version number gets (TF Serving's `Latest`) is AVAILABLE, which it is only once
        warmed up; not while none is, nor once the server is stopping."""
        with self._lock:
            served, known = self._served, dict(self._statuses)
        if self._stopping:
            return False, {"status": "not ready", "reason": "the server is stopping"}
        if served is None or known[served.version].state != "AVAILABLE":
            loading = sorted(v for v, status in known.items() if status.state == "LOADING")
            reason = "no version is AVAILABLE" + (f" (loading: {loading})" if loading else "")
            return False, {"status": "not ready", "reason": reason}
        return True, {"status": "ready", "model": self.base.name, "version": served.version}

    @property
    def served_version(self) -> int | None:
        served = self._served
        return served.version if served else None
