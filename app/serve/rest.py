"""The REST API of TF Serving 2.x on Starlette, plus the metrics page and the web page.

    GET  /v1/models/NAME[/versions/V]             model status (GetModelStatusResponse as JSON)
    GET  /v1/models/NAME[/versions/V]/metadata    signature defs
    POST /v1/models/NAME[/versions/V]:predict     row or columnar predict
    GET  /monitoring/prometheus/metrics           Prometheus metrics
    GET  /healthz                                 200 while the process is up (liveness)
    GET  /readyz                                  200 once the served version is AVAILABLE (warmed
                                                  up), else 503 with the reason (readiness)
    GET  /                                        the web page

TF Serving's own status URL answers 200 whatever the versions' states (as TF Serving does);
orchestrators' probes ask `/healthz` and `/readyz`.

Paths are matched with TF Serving's own patterns (case-insensitive); every error is
`{"error": "..."}` with the HTTP status TF Serving gives its code.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from app.serve.errors import ServingError, as_serving_error, invalid_argument
from app.serve.json_api import parse_request, proto_json, request_inputs, response_body, signature_name_of
from app.serve.metrics import ServerMetrics
from app.serve.options import Limits
from app.serve.versions import ModelVersions

PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(classify|regress|predict)", re.IGNORECASE
)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+))?(/metadata)?", re.IGNORECASE)


class JSONAnswer(JSONResponse):
    """JSON as TF Serving writes it: UTF-8 text, NaN written as NaN."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False).encode("utf-8")


def build_app(versions: ModelVersions, limits: Limits, metrics: ServerMetrics) -> Starlette:
    """The ASGI application serving `versions`."""

    async def v1(request: Request) -> Response:
        started, method = time.perf_counter(), "unknown"
        try:
            path = request.url.path
            if request.method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
                method = match.group(3).lower()
                if method != "predict":
                    raise ServingError(
                        "UNIMPLEMENTED", f"{method} is not served: these models have no such signature"
                    )
                body = await _read_body(request, limits.max_body_bytes)
                answer = await _predict(versions, match.group(1), _version(match.group(2)), body)
            elif request.method == "GET" and (match := STATUS_PATH.fullmatch(path)):
                name, version, metadata = match.group(1), _version(match.group(2)), match.group(3)
                if not name:
                    raise invalid_argument("Missing model name in request.")
                method = "metadata" if metadata else "status"
                answer = _metadata(versions, name, version) if metadata else _status(versions, name, version)
            else:
                raise invalid_argument(f"Malformed request: {request.method} {path}")
            response = JSONAnswer(answer)
            status = "OK"
        except Exception as error:  # noqa: BLE001  (every failure is answered, never a crash)
            failure = as_serving_error(error)
            response, status = JSONAnswer({"error": failure.message}, failure.http_status), failure.code
        metrics.observe("rest", method, status, time.perf_counter() - started)
        return response

    async def prometheus(request: Request) -> Response:
        metrics.version.labels(versions.base.name).set(versions.served_version or 0)
        return Response(metrics.page(), media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        return JSONAnswer({"status": "alive"})

    async def readyz(request: Request) -> Response:
        ready, why = versions.readiness()
        return JSONAnswer(why, 200 if ready else 503)

    async def page(request: Request) -> Response:
        text = resources.files("app.serve").joinpath("page/index.html").read_text(encoding="utf-8")
        return HTMLResponse(text.replace("{{MODEL_NAME}}", html.escape(versions.base.name, quote=True)))

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/monitoring/prometheus/metrics", prometheus, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/{rest:path}", v1, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes)


def _version(text: str | None) -> int | None:
    return None if text is None else int(text)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    too_large = ServingError(
        "INVALID_ARGUMENT", f"the request body is over {limit} bytes (--max-body-bytes)", http_status=413
    )
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _predict(versions: ModelVersions, name: str, version: int | None, body: bytes) -> dict:
    request = parse_request(body)
    with versions.servable(name, version) as servable:
        signature_name = signature_name_of(request)
        inputs, format = request_inputs(request, servable.signature(signature_name))
        outputs = await asyncio.wrap_future(servable.predict(signature_name, inputs))
    return response_body(outputs, format)


def _status(versions: ModelVersions, name: str, version: int | None) -> dict:
    return proto_json(versions.status_response(name, version))


def _metadata(versions: ModelVersions, name: str, version: int | None) -> dict:
    with versions.servable(name, version) as servable:
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": proto_json(servable.signature_def_map())},
        }
