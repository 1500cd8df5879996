"""Starts the REST and gRPC servers over one model's versions, prints where they listen, and on
Ctrl-C or SIGTERM stops accepting, answers the requests in flight, then returns."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from app.model_base import ModelBase
from app.serve.grpc_api import build_grpc_server
from app.serve.metrics import ServerMetrics
from app.serve.options import ServeOptions
from app.serve.rest import build_app
from app.serve.servable import Servable
from app.serve.versions import ModelVersions


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve(options: ServeOptions) -> int:
    """Serves until interrupted; returns 0 once every request in flight was answered."""
    metrics = ServerMetrics()

    def load(version: int, directory: Path) -> Servable:
        return Servable(
            options.model_name,
            version,
            directory,
            options.batching,
            options.limits,
            metrics.batch_size.observe,
        )

    versions = ModelVersions(
        ModelBase(options.model_base, options.model_name), load, options.poll_seconds, log
    )
    versions.start()
    rest_socket = _bound_socket(options.host, options.rest_port, "--rest-port")
    grpc_server = build_grpc_server(versions, metrics, options.limits, options.grpc_threads)
    grpc_port = grpc_server.add_insecure_port(_address(options.host, options.grpc_port))
    if grpc_port == 0:
        raise OSError(f"cannot listen for gRPC on {options.host}:{options.grpc_port} (--grpc-port): in use?")
    grpc_server.start()
    rest_port = rest_socket.getsockname()[1]
    host = f"[{options.host}]" if ":" in options.host else options.host
    print(
        f"Serving model {options.model_name!r} version {versions.served_version} from {versions.base}\n"
        f"  REST: http://{host}:{rest_port}/v1/models/{options.model_name}\n"
        f"  gRPC: {host}:{grpc_port}\n"
        f"  page: http://{host}:{rest_port}/\n"
        "Ctrl-C stops (requests in flight are answered first).",
        flush=True,
    )
    # uvicorn re-raises the signal it caught once it has drained; these make that a no-op
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: None)
    config = uvicorn.Config(
        build_app(versions, options.limits, metrics),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(options.drain_seconds),
        lifespan="off",
    )
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[rest_socket]))
    finally:
        log("Stopping: answering the requests in flight…")
        grpc_server.stop(grace=options.drain_seconds).wait()
        versions.stop(options.drain_seconds)
    log("Stopped.")
    return 0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_socket(host: str, port: int, flag: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only for sockets
    # whose proto says TCP; with proto 0 Nagle's algorithm delays every small answer
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({flag}): {error.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
