"""Versions while serving: a new version published with `attend export --model-base` is picked up
and swapped in with no request failing; a version that cannot load leaves the previous one
served; SIGTERM answers the requests in flight before the server exits 0."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from app.model_base import ModelBase
from app.serve.versions import ModelVersions
from tests.serving import Server, http, publish

pytestmark = pytest.mark.slow


def statuses(server, name="bible") -> dict[str, str]:
    status, answer = http("GET", f"{server.rest}/v1/models/{name}")
    assert status == 200, answer
    return {entry["version"]: entry["state"] for entry in answer["model_version_status"]}


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_published_version_is_swapped_in_while_requests_run_and_none_fails(trained_run, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(trained_run / "export", base / "bible" / "1")
    with Server("--model-base", str(base), "--model-name", "bible", "--poll-seconds", "0.5") as server:
        answers: list[int] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                answers.append(
                    http("POST", f"{server.rest}/v1/models/bible:predict", {"instances": ["Hola."]})[0]
                )

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            wait_for(lambda: len(answers) >= 10, 60, "requests before the new version")
            assert publish(trained_run, base, "bible").name == "2"  # the real export, while serving
            wait_for(lambda: statuses(server).get("2") == "AVAILABLE", 120, "version 2")
            served_before = len(answers)
            wait_for(lambda: len(answers) >= served_before + 10, 60, "requests after the swap")
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)
        assert answers and set(answers) == {200}, f"{answers.count(200)} of {len(answers)} answered 200"
        wait_for(lambda: statuses(server) == {"2": "AVAILABLE", "1": "END"}, 60, "version 1 unloaded")
        assert (
            http("POST", f"{server.rest}/v1/models/bible/versions/2:predict", {"instances": ["Hola."]})[0]
            == 200
        )
        gone = http("POST", f"{server.rest}/v1/models/bible/versions/1:predict", {"instances": ["Hola."]})
        assert gone == (404, {"error": "Servable not found for request: Specific(bible, 1)"})
        assert "Serving version 2 of 'bible'" in server.log() and "Unloaded version 1" in server.log()
        assert server.stop() == 0


def test_a_version_that_fails_to_load_is_reported_and_the_previous_one_stays(trained_run, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(trained_run / "export", base / "bible" / "1")
    with Server("--model-base", str(base), "--model-name", "bible", "--poll-seconds", "0.3") as server:
        broken = base / "bible" / "2"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: statuses(server).get("2") == "END", 60, "the failed load")
        status, answer = http("GET", f"{server.rest}/v1/models/bible/versions/2")
        (entry,) = answer["model_version_status"]
        assert entry["status"]["error_code"] == "UNKNOWN" and entry["status"]["error_message"]
        assert statuses(server)["1"] == "AVAILABLE"
        assert http("POST", f"{server.rest}/v1/models/bible:predict", {"instances": ["Hola."]})[0] == 200
        assert "Version 2 of 'bible' failed to load" in server.log()
        assert "still serving version 1" in server.log()
        assert server.stop() == 0


def test_sigterm_answers_the_request_in_flight_then_exits_0(trained_run, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(trained_run / "export", base / "bible" / "1")
    long_request = {"signature_name": "translate_with_attention", "instances": ["Y lloró Jesús. " * 12] * 128}
    with Server("--model-base", str(base), "--model-name", "bible", "--no-batching") as server:
        started = time.monotonic()
        assert http("POST", f"{server.rest}/v1/models/bible:predict", long_request)[0] == 200
        alone = time.monotonic() - started
        answer: list = []
        request = threading.Thread(
            target=lambda: answer.append(http("POST", f"{server.rest}/v1/models/bible:predict", long_request))
        )
        request.start()
        time.sleep(min(0.3, alone / 3))  # the request is being answered
        assert server.stop() == 0
        request.join(60)
        assert answer and answer[0][0] == 200 and len(answer[0][1]["predictions"]) == 128
        assert "Stopped." in server.log()


def test_serving_an_empty_base_says_how_to_publish(tmp_path):
    (tmp_path / "bible").mkdir()
    versions = ModelVersions(ModelBase(tmp_path, "bible"), load=None, poll_seconds=0)
    with pytest.raises(ValueError, match=r"no version to serve .*`attend export RUN --model-base"):
        versions.start()
