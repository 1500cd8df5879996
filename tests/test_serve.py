"""`attend serve` as a TF Serving client sees it: a real server process on loopback ports, driven
with plain HTTP (TF Serving's REST API) and with tensorflow-serving-api's own gRPC stubs."""

from __future__ import annotations

import base64
import concurrent.futures
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the export's SentencePiece ops)
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.serving import Server, http

pytestmark = pytest.mark.slow
SENTENCES = ["Hola.", "Y lloró Jesús.", "En el principio creó Dios los cielos y la tierra."]
LIMITS = ["--max-body-bytes", "4096", "--max-instances", "8", "--max-sentence-chars", "300"]


@pytest.fixture(scope="module")
def model_base(trained_run, tmp_path_factory):
    """A model base holding the trained run's export as version 1 of `es-en` (the README's name)."""
    base = tmp_path_factory.mktemp("base")
    shutil.copytree(trained_run / "export", base / "es-en" / "1")
    return base


@pytest.fixture(scope="module")
def server(model_base):
    with Server(
        "--model-base", str(model_base), "--model-name", "es-en", "--poll-seconds", "0", *LIMITS
    ) as running:
        yield running
        assert running.stop() == 0, running.log()
    assert "Stopped." in running.log()


@pytest.fixture(scope="module")
def expected(model_base):
    """What the SavedModel itself answers, loaded in this process: the reference for both APIs."""
    loaded = tf.saved_model.load(str(model_base / "es-en" / "1"))
    out = loaded.signatures["serving_default"](text=tf.constant(SENTENCES))
    return {"translation": [t.decode() for t in out["translation"].numpy()], "score": out["score"].numpy()}


def predict_url(server, tail=":predict", name="es-en"):
    return f"{server.rest}/v1/models/{name}{tail}"


# === REST: status and metadata ===


def test_model_status_says_version_1_is_available(server):
    for url in (predict_url(server, ""), predict_url(server, "/versions/1")):
        status, answer = http("GET", url)
        assert status == 200
        assert answer == {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }


def test_metadata_lists_every_signature_with_dtypes_and_shapes(server):
    status, answer = http("GET", predict_url(server, "/metadata"))
    assert status == 200
    assert answer["model_spec"] == {"name": "es-en", "signature_name": "", "version": "1"}
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {
        "serving_default",
        "translate_with_attention",
        "translate_ids",
        "translate_nbest",
        "translate_with_alignment",
        "score",
        "sample",
        "complete",
    }
    default = signatures["serving_default"]
    assert default["inputs"]["text"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in default["inputs"]["text"]["tensor_shape"]["dim"]] == ["-1"]
    assert {k: v["dtype"] for k, v in default["outputs"].items()} == {
        "translation": "DT_STRING",
        "score": "DT_FLOAT",
    }
    ids = signatures["translate_ids"]["inputs"]["source_ids"]
    assert ids["dtype"] == "DT_INT32" and [d["size"] for d in ids["tensor_shape"]["dim"]] == ["-1", "-1"]


# === REST: predict ===


def test_row_format_predicts_what_the_saved_model_translates(server, expected):
    status, answer = http("POST", predict_url(server), {"instances": SENTENCES})
    assert status == 200
    assert [p["translation"] for p in answer["predictions"]] == expected["translation"]
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], expected["score"], rtol=1e-5)
    named = http("POST", predict_url(server), {"instances": [{"text": s} for s in SENTENCES]})[1]
    assert named == answer


def test_columnar_format_and_b64_strings_give_the_same_translations(server, expected):
    status, answer = http("POST", predict_url(server), {"inputs": {"text": SENTENCES}})
    assert status == 200
    assert answer["outputs"]["translation"] == expected["translation"]
    encoded = [{"b64": base64.b64encode(s.encode()).decode()} for s in SENTENCES]
    status, b64 = http("POST", predict_url(server), {"signature_name": "serving_default", "inputs": encoded})
    assert status == 200 and b64 == answer


def test_every_signature_is_selectable(server, expected):
    request = {"signature_name": "translate_with_attention", "instances": SENTENCES[:1]}
    status, answer = http("POST", predict_url(server, "/versions/1:predict"), request)
    assert status == 200
    (row,) = answer["predictions"]
    assert row["translation"] == expected["translation"][0]
    assert row["source_tokens"][-1] == "</s>" and len(row["attention"][0]) == len(row["source_tokens"])
    status, ids = http(
        "POST", predict_url(server), {"signature_name": "translate_ids", "inputs": [[5, 6, 2]]}
    )
    assert status == 200 and set(ids["outputs"]) == {"ids", "lengths", "score"}
    assert len(ids["outputs"]["ids"][0]) == 64  # decode.max_output_tokens of the smoke preset: static shape
    request = {"signature_name": "translate_nbest", "instances": SENTENCES[:2]}
    status, nbest = http("POST", predict_url(server), request)
    assert status == 200 and len(nbest["predictions"]) == 2
    for row, translation in zip(nbest["predictions"], expected["translation"], strict=False):
        assert row["translations"][0] == translation and len(row["translations"]) == len(row["scores"]) > 1


@pytest.mark.parametrize(
    ("tail", "body", "code", "message"),
    [
        (
            ":predict",
            {"signature_name": "nope", "instances": ["x"]},
            400,
            'Serving signature name: "nope" not found',
        ),
        (":predict", b'{"instances": [', 400, "JSON Parse error"),
        (":predict", b"[1, 2]", 400, "not an object"),
        (":predict", {"instances": ["x"], "inputs": ["x"]}, 400, "only one of 'inputs' or 'instances'"),
        (":predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
        (":predict", {"instances": [{"txt": "x"}]}, 400, "missing the input 'text'"),
        (":predict", {"inputs": {"text": ["x"], "extra": [1]}}, 400, "unknown inputs ['extra']"),
        (":predict", {"instances": [3]}, 400, "expected a string"),
        (":predict", {"instances": [{"b64": "not base64!"}]}, 400, "invalid base64"),
        (":predict", {"instances": [["a", "b"]]}, 400, "rank 2"),
        (":predict", {"instances": ["x"] * 9}, 400, "at most 8 (--max-instances)"),
        (":predict", {"instances": ["x" * 301]}, 400, "at most 300 (--max-sentence-chars)"),
        (":predict", {"instances": ["x" * 5000]}, 413, "over 4096 bytes (--max-body-bytes)"),
        (
            ":predict",
            {"signature_name": "translate_ids", "inputs": [[5, 99999, 2]]},
            400,
            "source_ids must be in [0,",
        ),
        (":predict", {"signature_name": "translate_ids", "inputs": [[5, 6.5]]}, 400, "expected int32"),
        (":predict", {"signature_name": "translate_ids", "inputs": [[5, 6], [7]]}, 400, "rectangular"),
        (":classify", {"examples": []}, 501, "classify is not served"),
    ],
)
def test_bad_predict_requests_get_tf_servings_status_and_a_json_error(server, tail, body, code, message):
    status, answer = http("POST", predict_url(server, tail), body)
    assert status == code, answer
    assert set(answer) == {"error"} and message in answer["error"]


@pytest.mark.parametrize(
    ("method", "url_tail", "code", "message"),
    [
        ("POST", "/v1/models/other:predict", 404, "Servable not found for request: Latest(other)"),
        (
            "POST",
            "/v1/models/es-en/versions/7:predict",
            404,
            "Servable not found for request: Specific(es-en, 7)",
        ),
        ("GET", "/v1/models/other", 404, "Could not find any versions of model other"),
        ("GET", "/v1/models/es-en/versions/7", 404, "Could not find version 7 of model es-en"),
        ("GET", "/v1/models/es-en/versions/7/metadata", 404, "Specific(es-en, 7)"),
        ("GET", "/v1/models", 400, "Missing model name"),
        ("GET", "/v1/models/es-en:predict", 400, "Malformed request: GET"),
    ],
)
def test_unknown_models_and_versions_are_404_and_malformed_paths_400(server, method, url_tail, code, message):
    status, answer = http(method, server.rest + url_tail, {"instances": ["x"]} if method == "POST" else None)
    assert status == code and message in answer["error"]


def test_the_metrics_page_counts_requests_by_status(server):
    http("POST", predict_url(server), {"instances": ["Hola."]})
    http("POST", predict_url(server, name="missing"), {"instances": ["Hola."]})
    status, page = http("GET", server.rest + "/monitoring/prometheus/metrics")
    assert status == 200
    assert 'attend_requests_total{api="rest",method="predict",status="OK"}' in page
    assert 'attend_requests_total{api="rest",method="predict",status="NOT_FOUND"}' in page
    assert 'attend_model_version{model="es-en"} 1.0' in page
    assert "attend_batch_size_count" in page and "attend_request_latency_seconds_bucket" in page


# === gRPC, through tensorflow-serving-api's own stubs, as a TF Serving client is written ===


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc) as open_channel:
        yield open_channel


def predict_request(sentences, name="es-en", signature="serving_default"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(sentences))
    return request


def test_grpc_predict_answers_what_the_saved_model_translates(channel, expected):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(SENTENCES), 60)
    assert [t.decode() for t in tf.make_ndarray(response.outputs["translation"])] == expected["translation"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["score"]), expected["score"], rtol=1e-5)
    assert response.model_spec.name == "es-en" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"

    filtered = predict_request(SENTENCES[:1])
    filtered.output_filter.append("score")
    assert set(stub.Predict(filtered, 60).outputs) == {"score"}


def test_grpc_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "es-en"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, 60)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {
        "serving_default",
        "translate_with_attention",
        "translate_ids",
        "translate_nbest",
        "translate_with_alignment",
        "score",
        "sample",
        "complete",
    }
    assert signatures.signature_def["serving_default"].inputs["text"].dtype == tf.string.as_datatype_enum

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "es-en"
    (version,) = models.GetModelStatus(status_request, 60).model_version_status
    assert version.version == 1 and version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize(
    ("request_of", "code", "message"),
    [
        (lambda: predict_request(["Hola."], name="other"), grpc.StatusCode.NOT_FOUND, "Latest(other)"),
        (
            lambda: predict_request(["Hola."], signature="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            '"nope" not found',
        ),
        (lambda: predict_request([1, 2]), grpc.StatusCode.INVALID_ARGUMENT, "the signature takes string"),
        (lambda: predict_request(["x"] * 9), grpc.StatusCode.INVALID_ARGUMENT, "--max-instances"),
    ],
)
def test_grpc_errors_carry_tf_servings_status_codes(channel, request_of, code, message):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request_of(), 60)
    assert error.value.code() == code and message in error.value.details()


# === Batching: a full queue answers at once ===


def test_a_full_batch_queue_answers_503_at_once_and_the_rest_are_served(model_base):
    knobs = ["--max_batch_size", "1", "--max_enqueued_batches", "1", "--batch_timeout_micros", "0"]
    with Server(
        "--model-base", str(model_base), "--model-name", "es-en", "--poll-seconds", "0", *knobs
    ) as server:
        url = predict_url(server)
        # 3 rows need 3 batches of max_batch_size 1: more than the queue holds, refused whole
        status, answer = http("POST", url, {"instances": ["Hola."] * 3})
        assert status == 503 and "batch scheduling queue" in answer["error"] and "full" in answer["error"]
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            answers = list(
                pool.map(
                    lambda _: http("POST", url, {"instances": ["Y lloró Jesús."]}, timeout=60), range(48)
                )
            )
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {200, 503} and 200 in statuses, statuses
        assert all("full" in answer["error"] for status, answer in answers if status == 503)
        assert server.stop() == 0


# === The serving page's examples (docs/serving.md), run as written (only the addresses differ) ===


def readme_serving_blocks(language: str) -> list[str]:
    text = (Path(__file__).parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    return re.findall(rf"^```{language} serving\n(.*?)^```", text, re.S | re.M)


def as_run_here(block: str, server) -> str:
    return block.replace("localhost:8501", server.rest.removeprefix("http://")).replace(
        "localhost:8500", server.grpc
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_examples_work_as_written(server):
    (block,) = readme_serving_blocks("bash")
    assert block.count("curl") == 7
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", as_run_here(block, server)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"error"' not in result.stdout
    for expected in ('"state": "AVAILABLE"', '"signature_def"', '"predictions"', '"outputs"', '"attention"'):
        assert expected in result.stdout
    assert 'attend_requests_total{api="rest",method="predict",status="OK"}' in result.stdout


def test_the_readme_grpc_example_works_as_written(server):
    (block,) = readme_serving_blocks("python")
    result = subprocess.run(
        [sys.executable, "-c", as_run_here(block, server)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(" 1")  # the served version
