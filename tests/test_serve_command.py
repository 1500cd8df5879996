"""`attend serve`'s refusals, each before anything listens, and its listening socket."""

from __future__ import annotations

import socket

import pytest

from app.serve.server import _bound_socket
from tests.test_cli import attend_here


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("", "give a run folder (attend serve RUN_DIR), or --model-base BASE --model-name NAME"),
        ("--model-base {base}", "give a run folder"),
        ("--model-base {base} --model-name ../etc", "invalid model name '../etc'"),
        ("--model-base {base} --model-name m", "no version to serve in {base}/m"),
        ("{run} --model-base {base}", "either a run folder or --model-base, not both"),
        ("{run}", "no run folder at {run}"),
        ("--model-base {base} --model-name m --allowed_batch_sizes 8,x", "expected numbers like 8,32,64"),
        ("--model-base {base} --model-name m --allowed_batch_sizes 8,16", "end with max_batch_size (64)"),
        ("--model-base {base} --model-name m --batching-parameters-file {base}/none.txt", "none.txt"),
    ],
)
def test_serve_refuses_what_cannot_be_served_with_a_clear_message(tmp_path, arguments, message):
    places = {"base": tmp_path / "base", "run": tmp_path / "run"}
    places["base"].mkdir()
    result = attend_here("serve", *arguments.format(**places).split(), "--rest-port", "0", "--grpc-port", "0")
    assert result.returncode == 2
    assert message.format(**places) in result.stderr


@pytest.mark.slow
def test_a_run_without_an_export_is_refused(trained_run, tmp_path):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    result = attend_here("serve", str(run))
    assert result.returncode == 2 and "has no export" in result.stderr and "attend export" in result.stderr


def test_the_rest_socket_is_tcp_so_that_asyncio_turns_nagle_off():
    sock = _bound_socket("127.0.0.1", 0, "--rest-port")
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only on such sockets
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_a_port_in_use_names_its_flag():
    taken = _bound_socket("127.0.0.1", 0, "--rest-port")
    try:
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ \(--rest-port\)"):
            _bound_socket("127.0.0.1", taken.getsockname()[1], "--rest-port")
    finally:
        taken.close()
