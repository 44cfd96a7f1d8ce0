"""`judge llm` against a real OpenAI-compatible server: `transformers serve` on loopback.

The server runs a tiny random model (dpo3d.models.tiny), so its replies are noise: the test
checks the plumbing (request, reply, record fields, cache), not the grades.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dpo3d.judges.rubric import parse_score

STARTUP_TIMEOUT_S = 120

RECORDS = [
    {"id": "r1", "prompt": "What is 2+2?", "completion": "It is 4.", "answer": "4"},
    {
        "id": "r2",
        "prompt": [{"role": "user", "content": "Name a prime number."}],
        "completion": [{"role": "assistant", "content": "9"}],
    },
]


def serve_available() -> tuple[bool, str]:
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        return False, "this transformers has no `transformers serve`"
    if not is_serve_available():
        return False, "`transformers serve` needs fastapi and uvicorn (pip install 'transformers[serving]')"
    if not (Path(sys.executable).parent / "transformers").is_file():
        return False, "no `transformers` executable next to this Python"
    return True, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"transformers serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(
        f"transformers serve did not answer {url} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
    )


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@pytest.fixture
def served_model(tmp_path):
    """(base_url, model name, server process) of a tiny model served on a free loopback port."""
    ok, reason = serve_available()
    if not ok:
        pytest.skip(reason)
    from dpo3d.models.tiny import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny-judge")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [
        str(Path(sys.executable).parent / "transformers"),
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--default-seed",
        "0",
    ]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", server, log)
        yield f"http://127.0.0.1:{port}/v1", model, server
    finally:
        stop(server)


def judge_command() -> list[str]:
    """`python -m dpo3d judge llm` once it is registered; until then the same command function, run alone."""
    from dpo3d_cli import judge

    if any(command.name == "llm" for command in judge.app.registered_commands):
        return [sys.executable, "-m", "dpo3d", "judge", "llm"]
    runner = "import typer; from dpo3d_cli.judge_llm import llm_command; typer.run(llm_command)"
    return [sys.executable, "-c", runner]


def test_judge_llm_round_trip_against_transformers_serve(served_model, tmp_path):
    base_url, model, server = served_model
    data = tmp_path / "candidates.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    out = tmp_path / "judged.jsonl"
    cache = tmp_path / "judge-cache.sqlite"
    env = {**os.environ, "OPENAI_API_KEY": "sk-serve-test-secret-1234", "HF_HUB_OFFLINE": "1"}
    args = [
        *judge_command(),
        str(data),
        "-o",
        str(out),
        "--base-url",
        base_url,
        "--judge-model",
        model,
        "--max-tokens",
        "12",
        "--concurrency",
        "2",
        "--max-retries",
        "0",
        "--timeout",
        "60",
        "--cache",
        str(cache),
    ]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr

    judged = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in judged] == ["r1", "r2"]
    for record, original in zip(judged, RECORDS, strict=True):
        assert record["prompt"] == original["prompt"] and record["completion"] == original["completion"]
        assert record["judge"] == f"llm:{model}"
        assert isinstance(record["verdict"]["reply"], str)  # the call went through: a reply, maybe noise
        assert record["score"] is None or record["score"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        # the score is what the reply says; an error is set exactly when it says nothing usable
        expected = parse_score(record["verdict"]["reply"])
        assert record["score"] == (None if expected is None else float(expected))
        assert ("error" in record["verdict"]) == (expected is None)
    summary_line = " ".join(first.stderr.split())
    assert "judge llm: 2 judged" in summary_line and "2 requests, 0 from cache" in summary_line
    assert "sk-serve-test-secret-1234" not in first.stdout + first.stderr + out.read_text()
    assert b"sk-serve-test-secret-1234" not in cache.read_bytes()

    # the same inputs again, with the server gone: every scored reply comes from the cache; a reply that gave
    # no score was not cached, so it is asked again (and fails: nobody answers)
    stop(server)
    out.unlink()
    scored = sum(record["score"] is not None for record in judged)
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{2 - scored} requests, {scored} from cache" in " ".join(second.stderr.split())
    again = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for before, after in zip(judged, again, strict=True):
        assert after == before if before["score"] is not None else after["score"] is None
