"""`accelerate launch` in tests: each launch rendezvous on a port of its own, so launches in tests that
run side by side (pytest -n) never meet on accelerate's default port 29500."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_args() -> list[str]:
    """``--main_process_port N`` for one ``accelerate launch``."""
    return ["--main_process_port", str(free_port())]
