"""Faults around the judges and the inputs (issue 28), each class injected by hand, seconds each.

Classes: the LLM judge's Retry-After; replies without a score never cached; a corrupt or locked reply cache; the
API key never written (a fake OpenAI-compatible server on 127.0.0.1 quotes it); JSON nested 1,000 or 100,000 deep
and lone surrogates refused naming the file and the line; a 10 MB response tokenised only as far as
--max-length needs; pairs whose chosen equals the rejected dropped; a distributed launch whose processes did not
join one group refused; `compare -o` writing where it says.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
import torch
from typer.testing import CliRunner

from dpo3d.data import inputs
from dpo3d.data.faults import Fault
from dpo3d.data.records import RecordError, iter_records
from dpo3d.data.sequences import EncodedPair, encode_pair, render_prompt, render_response
from dpo3d.judges import llm_judge
from dpo3d.judges.llm_judge import LLMJudge, LLMJudgeConfig
from dpo3d.judges.rubric import judge_messages

try:  # the openai client's HTTP library: httpx2 in recent releases, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai
    import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-fault-test-0123456789-QUOTED"
RECORD = {"id": "a", "prompt": "What is 2+2?", "completion": "It is 4.", "answer": "4"}


# --------------------------------------------------------------------------- helpers


def reply(text: str):
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))])


class FakeClient:
    """``chat.completions.create`` answered in turn from ``outcomes`` (a reply text or an exception to raise)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kwargs):
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return reply(outcome)


def status_error(cls, code: int, headers: dict | None = None):
    request = httpx.Request("POST", "http://judge.test/v1/chat/completions")
    return cls("busy", response=httpx.Response(code, request=request, headers=headers or {}), body=None)


def judge_config(**overrides) -> LLMJudgeConfig:
    fields = dict(base_url="http://judge.test/v1", model="judge-7b", backoff_s=0.5)
    fields.update(overrides)
    return LLMJudgeConfig(**fields)


def first_wait(error, monkeypatch, **overrides) -> float:
    """The wait before the retry after ``error`` (no jitter: the back-off alone would wait 0.5 s)."""
    monkeypatch.setattr(llm_judge.random, "uniform", lambda a, b: 1.0)
    waits: list[float] = []
    client = FakeClient(error, "Score: 4")
    (out,) = LLMJudge(judge_config(**overrides), client=client, sleep=waits.append).judge([RECORD])
    assert out["score"] == 4.0 and client.calls == 2 and len(waits) == 1
    return waits[0]


def judged(path: Path, client: FakeClient, **overrides) -> tuple[dict, LLMJudge]:
    with LLMJudge(judge_config(cache_path=path, **overrides), client=client, sleep=lambda s: None) as judge:
        (out,) = judge.judge([RECORD])
    return out, judge


def one_line(text: str) -> bool:
    return "\n" not in str(text).strip()


# --------------------------------------------------------------------------- Retry-After (6 cases)


def test_retry_after_beyond_the_cap_waits_the_cap(monkeypatch):
    # the case: Retry-After 100 was ignored (first retry 0.67 s later); now it is honoured up to the cap
    wait = first_wait(status_error(openai.RateLimitError, 429, {"Retry-After": "100"}), monkeypatch)
    assert wait == LLMJudgeConfig.max_wait_s == 60.0


def test_retry_after_in_seconds_is_honoured(monkeypatch):
    assert first_wait(status_error(openai.RateLimitError, 429, {"Retry-After": "7"}), monkeypatch) == 7.0


def test_retry_after_on_503_is_honoured(monkeypatch):
    assert first_wait(status_error(openai.InternalServerError, 503, {"Retry-After": "12"}), monkeypatch) == 12.0


def test_retry_after_as_an_http_date_is_honoured(monkeypatch):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = first_wait(status_error(openai.RateLimitError, 429, {"Retry-After": when}), monkeypatch)
    # an HTTP date has whole seconds: the date lies in (now + 29, now + 30], and the test itself takes < 1.5 s
    assert 27.5 < wait <= 30.0


def test_the_cap_is_a_config_field_with_its_help(monkeypatch):
    field = {f.name: f for f in dataclasses.fields(LLMJudgeConfig)}["max_wait_s"]
    assert "Retry-After" in field.metadata["help"]
    assert first_wait(status_error(openai.RateLimitError, 429, {"Retry-After": "100"}), monkeypatch, max_wait_s=5.0) == 5.0
    with pytest.raises(ValueError, match="max"):
        judge_config(max_wait_s=-1)


def test_a_retry_after_in_the_past_or_garbled_falls_back_to_the_back_off(monkeypatch):
    past = email.utils.formatdate(time.time() - 600, usegmt=True)
    assert first_wait(status_error(openai.RateLimitError, 429, {"Retry-After": past}), monkeypatch) == 0.5
    assert first_wait(status_error(openai.RateLimitError, 429, {"Retry-After": "soon"}), monkeypatch) == 0.5


# --------------------------------------------------------------------------- replies without a score (3 cases)


def test_a_reply_without_a_score_is_not_cached(tmp_path):
    path = tmp_path / "judge.sqlite"
    out, _ = judged(path, FakeClient("I would rather not say."))
    assert out["score"] is None and "no score" in out["verdict"]["error"]
    rerun = FakeClient("Score: 3")
    out, judge = judged(path, rerun)
    assert rerun.calls == 1 and judge.cache_hits == 0 and out["score"] == 3.0


def test_an_old_cache_entry_without_a_score_is_asked_again(tmp_path):
    path = tmp_path / "judge.sqlite"
    cfg = judge_config(cache_path=path)
    with LLMJudge(cfg, client=FakeClient("Score: 1")) as judge:  # makes the table
        pass
    with sqlite3.connect(path) as db:  # what an earlier version stored
        db.execute("INSERT INTO replies (key, reply) VALUES (?, ?)", (cfg.cache_key(judge_messages(RECORD, cfg.rubric)), "hmm"))
    rerun = FakeClient("Score: 5")
    out, judge = judged(path, rerun)
    assert rerun.calls == 1 and out["score"] == 5.0


def test_a_scored_reply_is_still_served_from_the_cache(tmp_path):
    path = tmp_path / "judge.sqlite"
    judged(path, FakeClient("Score: 2"))
    rerun = FakeClient("Score: 5")
    out, judge = judged(path, rerun)
    assert rerun.calls == 0 and judge.cache_hits == 1 and out["score"] == 2.0


# --------------------------------------------------------------------------- a corrupt reply cache (4 cases)


def corrupt_cache_recovers(path: Path) -> None:
    """The judge runs on the damaged cache with one warning naming it, and the rebuilt cache serves a rerun."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = judged(path, FakeClient("Score: 4"))
    assert out["score"] == 4.0
    about = [w for w in caught if str(path) in str(w.message)]
    assert len(about) == 1 and one_line(about[0].message), [str(w.message) for w in caught]
    rerun = FakeClient("Score: 1")
    out, judge = judged(path, rerun)
    assert rerun.calls == 0 and out["score"] == 4.0


def filled_cache(path: Path, entries: int = 200) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        db.executemany("INSERT INTO replies VALUES (?, ?)", [(f"{i:064x}", "Score: 3 " + "x" * 500) for i in range(entries)])


def test_a_garbage_cache_file_is_rebuilt_with_one_warning(tmp_path):
    path = tmp_path / "judge.sqlite"
    path.write_bytes(os.urandom(4096))
    corrupt_cache_recovers(path)


def test_a_truncated_cache_is_rebuilt_with_one_warning(tmp_path):
    path = tmp_path / "judge.sqlite"
    filled_cache(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    corrupt_cache_recovers(path)


def test_a_cache_garbled_past_its_header_is_rebuilt_with_one_warning(tmp_path):
    path = tmp_path / "judge.sqlite"
    filled_cache(path)
    data = bytearray(path.read_bytes())
    page = 4096  # sqlite's default page size: keep the header page, garble every later one
    data[page:] = bytes(random.Random(0).randrange(256) for _ in range(len(data) - page))
    path.write_bytes(bytes(data))
    corrupt_cache_recovers(path)


def test_a_folder_given_as_the_cache_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "cache_dir"
    folder.mkdir()
    with pytest.raises((Fault, OSError)) as caught:
        LLMJudge(judge_config(cache_path=folder), client=FakeClient("Score: 4"))
    assert str(folder) in str(caught.value) and one_line(caught.value)


# --------------------------------------------------------------------------- a locked reply cache (3 cases)


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process that holds an exclusive lock on the cache until it is killed."""
    code = ("import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "db.execute('CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)'); "
            "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_cache_locked_by_another_process_is_one_line_naming_it_after_the_wait(tmp_path):
    path = tmp_path / "judge.sqlite"
    holder = hold_lock(path)
    try:
        started = time.monotonic()
        with pytest.raises(Fault) as caught:
            judged(path, FakeClient("Score: 4"), cache_wait_s=0.5)
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert str(path) in message and "locked" in message and one_line(message)
    assert 0.5 <= waited < 10


def test_a_cache_lock_released_within_the_wait_is_waited_for(tmp_path):
    path = tmp_path / "judge.sqlite"
    holder = hold_lock(path)
    threading.Timer(0.5, holder.kill).start()  # the other process ends after half a second
    try:
        out, _ = judged(path, FakeClient("Score: 4"), cache_wait_s=20)
    finally:
        holder.kill()
        holder.wait()
    assert out["score"] == 4.0


def test_the_cache_wait_is_a_config_field_with_its_help():
    field = {f.name: f for f in dataclasses.fields(LLMJudgeConfig)}["cache_wait_s"]
    assert "lock" in field.metadata["help"]
    with pytest.raises(ValueError):
        judge_config(cache_wait_s=-1)


# --------------------------------------------------------------------------- the API key (3 cases)


class QuotingServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose replies (and errors) quote the key the client sent."""

    seen: list[str] = []
    asked: dict[str, int] = {}

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        question = body["messages"][-1]["content"]
        QuotingServer.seen.append(key)
        QuotingServer.asked[question] = QuotingServer.asked.get(question, 0) + 1
        if "3*3" in question:
            status, payload = 401, {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
        elif "5-1" in question and QuotingServer.asked[question] == 1:  # rate limited once, then answered
            status, payload = 429, {"error": {"message": f"slow down, {key}"}}
        else:
            text = f"Your key {key} works. Score: 4" if "2+2" in question else f"Key {key}, no grade from me."
            status, payload = 200, {
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def quoting_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuotingServer)
    QuotingServer.seen, QuotingServer.asked = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_key_a_server_quotes_is_written_nowhere(tmp_path, monkeypatch, quoting_server):
    from dpo3d_cli.app import app

    monkeypatch.setenv("FAULT_JUDGE_KEY", KEY)
    monkeypatch.setenv("DPO3D_CACHE", str(tmp_path / "cache_home"))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    records = [{"id": "a", "prompt": "What is 2+2?", "completion": "4"}, {"id": "b", "prompt": "What is 3*3?", "completion": "9"},
               {"id": "c", "prompt": "What is 5-1?", "completion": "4"}, {"id": "d", "prompt": "What is 7+1?", "completion": "8"}]
    data = tmp_path / "in" / "cands.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    run = tmp_path / "run"
    args = ["judge", "llm", str(data), "-o", str(run / "judged.jsonl"), "--base-url", quoting_server, "--judge-model", "m",
            "--api-key-env", "FAULT_JUDGE_KEY", "--cache", str(run / "cache.sqlite"), "--max-retries", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert KEY in QuotingServer.seen  # the server did get the key, and quoted it back
    assert KEY not in result.output
    out = [json.loads(line) for line in (run / "judged.jsonl").read_text().splitlines()]
    assert [r["score"] for r in out] == [4.0, None, None, None]
    assert "***" in out[0]["verdict"]["reply"] and "AuthenticationError (401)" in out[1]["verdict"]["error"]
    rerun = CliRunner().invoke(app, args)  # the cache serves the scored reply back
    assert rerun.exit_code == 0, rerun.output
    written = [path for path in tmp_path.rglob("*") if path.is_file() and path != data]
    assert run / "cache.sqlite" in written
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path


def test_a_reply_quoting_the_key_is_redacted_before_the_record_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_JUDGE_KEY", KEY)
    path = tmp_path / "judge.sqlite"
    out, _ = judged(path, FakeClient(f"the key is {KEY}; Score: 5"), api_key_env="FAULT_JUDGE_KEY")
    assert out["score"] == 5.0 and KEY not in json.dumps(out) and "***" in out["verdict"]["reply"]
    assert KEY.encode() not in path.read_bytes()


def test_an_error_quoting_the_key_is_redacted(monkeypatch):
    monkeypatch.setenv("FAULT_JUDGE_KEY", KEY)
    error = openai.AuthenticationError(f"bad key {KEY}", response=httpx.Response(
        401, request=httpx.Request("POST", "http://judge.test/v1/chat/completions")), body=None)
    (out,) = LLMJudge(judge_config(api_key_env="FAULT_JUDGE_KEY"), client=FakeClient(error)).judge([RECORD])
    assert KEY not in json.dumps(out) and "***" in out["verdict"]["error"]


# --------------------------------------------------------------------------- JSON nested deep (5 cases)


def nested(depth: int) -> str:
    return '{"id": "x", "prompt": "p", "completion": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [1_000, 100_000, 500])
def test_json_nested_deep_is_a_record_error_naming_the_file_and_line(tmp_path, depth):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"id": "ok", "prompt": "p", "completion": "c"}\n' + nested(depth) + "\n")
    with pytest.raises(RecordError) as caught:
        inputs.read(str(path))
    assert caught.value.line == 2 and f"{path}:2" in str(caught.value) and "nested" in str(caught.value)
    assert one_line(caught.value)


def test_json_nested_a_little_is_read(tmp_path):
    path = tmp_path / "nested.jsonl"
    path.write_text(nested(30) + "\n")
    (record,) = inputs.read(str(path))
    assert record["id"] == "x"


def test_a_command_given_json_nested_100000_deep_says_one_line(tmp_path):
    from dpo3d_cli.app import app

    path = tmp_path / "deep.jsonl"
    path.write_text(nested(100_000) + "\n")
    result = CliRunner().invoke(app, ["judge", "math", str(path), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2, result.output
    assert f"{path}:1" in result.output and "nested" in result.output
    assert not (tmp_path / "out.jsonl").exists()


# --------------------------------------------------------------------------- lone surrogates (5 cases)


def test_a_lone_surrogate_is_refused_naming_the_file_line_and_field(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "1", "prompt": "p", "completion": "c"}\n{"id": "2", "prompt": "p", "completion": "bad \\ud800 here"}\n')
    with pytest.raises(RecordError) as caught:
        list(iter_records(path))
    message = str(caught.value)
    assert f"{path}:2" in message and "surrogate" in message and "completion" in message and one_line(message)


def test_a_lone_surrogate_inside_chat_messages_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "1", "prompt": [{"role": "user", "content": "hi \\uDC00"}], "completion": "c"}\n')
    with pytest.raises(RecordError, match=r"s\.jsonl:1: field 'prompt' .*surrogate"):
        inputs.read(str(path))


def test_a_surrogate_pair_is_a_character_and_is_read(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "1", "prompt": "p", "completion": "smile \\ud83d\\ude00 and a backslash \\\\ud800"}\n')
    ((_, record),) = list(iter_records(path))
    assert record["completion"] == "smile \U0001f600 and a backslash \\ud800"


def test_a_lone_surrogate_in_a_json_file_is_refused_naming_the_line(tmp_path):
    # the .json reader (pyarrow's) silently turned it into other text before
    path = tmp_path / "s.json"
    path.write_text('[\n{"id": "1", "prompt": "p", "completion": "a pair \\ud83d\\ude00, a backslash \\\\ud800"},\n'
                    '{"id": "2", "prompt": "p", "completion": "bad \\udc00"}\n]\n')
    with pytest.raises(RecordError) as caught:
        inputs.read(str(path))
    assert f"{path}:3" in str(caught.value) and "surrogate" in str(caught.value) and one_line(caught.value)
    path.write_text('[{"id": "1", "prompt": "p", "completion": "a pair \\ud83d\\ude00, a backslash \\\\ud800"}]')
    (record,) = inputs.read(str(path))
    assert record["completion"] == "a pair \U0001f600, a backslash \\ud800"


def test_a_command_given_a_lone_surrogate_names_the_file_and_line(tmp_path):
    from dpo3d_cli.app import app

    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "1", "prompt": "What is 1+1?", "completion": "2 \\ud800", "answer": "2"}\n')
    result = CliRunner().invoke(app, ["judge", "math", str(path), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2 and f"{path}:1" in result.output and "surrogate" in result.output, result.output


# --------------------------------------------------------------------------- a 10 MB response (11 cases)


RSS_SCRIPT = """
import resource, sys
from dpo3d.models.loading import BUNDLED, load_tokenizer
from dpo3d.data.sequences import encode_pair
tokenizer = load_tokenizer(BUNDLED)
encode_pair(tokenizer, "warm", "up", 128)
text = ("The quick brown fox jumps over the lazy dog. 12345 " * 200_001)[:10_000_000]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
response = encode_pair(tokenizer, [{"role": "user", "content": "Say a lot."}], text, 128)
prompt = encode_pair(tokenizer, text, "short", 128)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(response), len(prompt), (after - before) // 1024)
"""


def test_a_10_mb_response_with_max_length_128_stays_small():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    response_tokens, prompt_tokens, growth_mib = map(int, done.stdout.split()[-3:])
    assert response_tokens == prompt_tokens == 128
    # the 10 MB text is held as it is (10 MB) and rendered through the chat template (a few copies more); the
    # tokenizer sees only a few kB. 256 MiB leaves room for the allocator, 6x below the 1.5 GiB whole-text cost
    assert growth_mib < 256, f"peak RSS grew by {growth_mib} MiB"


class Spy:
    """A tokenizer that records the length of every text it is asked to tokenise."""

    def __init__(self, tokenizer):
        self._tokenizer, self.lengths = tokenizer, []

    def __call__(self, text, **kwargs):
        self.lengths.append(len(text))
        return self._tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_the_tokenizer_sees_a_bounded_text_for_a_long_prompt_and_response(tokenizer):
    spy = Spy(tokenizer)
    text = "word " * 200_000  # 1 MB
    assert len(encode_pair(spy, text, text, 64)) == 64
    assert len(encode_pair(spy, [{"role": "user", "content": text}], text, 64)) == 64
    assert max(spy.lengths) < 50_000, spy.lengths  # 64 tokens of English are a few hundred characters


def whole_text_pair(tokenizer, prompt, response, max_length: int) -> EncodedPair:
    """encode_pair as it was: every text tokenised whole, then cut to max_length."""
    special = not isinstance(prompt, list)
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=special)["input_ids"]
    response_ids = tokenizer(render_response(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(response_ids) > max_length:
        budget = max(max_length - len(prompt_ids), min(len(response_ids), max_length // 2))
        response_ids = response_ids[:budget]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(response_ids)) :]
    return EncodedPair(prompt_ids, response_ids)


def long_texts() -> dict[str, str]:
    rng = random.Random(0)
    words = ["the", "model", "answer", "is", "42", "because", "tokens", "über", "naïve", "Δx", "—", "\n", "  ", "def", "(x):"]
    return {
        "prose": " ".join(rng.choice(words) for _ in range(6000)),
        "hashes": "#" * 20_000,  # SmolLM2's longest tokens: 80 characters each
        "spaces": "a" + " " * 20_000 + "b",
        "newlines_and_indent": ("\n" + " " * 33) * 600,
        "digits": "1234567890" * 2000,
        "cjk": "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(8000)),
        "emoji": "".join(rng.choice("😀🎉🧪 ab") for _ in range(8000)),
        "mixed_unicode": "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0x2FF), rng.randrange(0x400, 0x4FF)]))
                                 for _ in range(12_000)),
        "no_spaces": "".join(rng.choice("abcdefghij") for _ in range(15_000)),
    }


@pytest.mark.parametrize("kind", sorted(long_texts()))
def test_cutting_the_text_changes_no_token_kept(tokenizer, kind):
    text = long_texts()[kind]
    chat = [{"role": "user", "content": text}]
    for prompt, response in ((("Q: " + text), "short answer"), ("Q:", text), (chat, text), (chat, "ok"), ("Q:", text[:300])):
        for max_length in (8, 32, 200):
            assert encode_pair(tokenizer, prompt, response, max_length) == whole_text_pair(tokenizer, prompt, response, max_length)


# --------------------------------------------------------------------------- identical chosen and rejected (5 cases)


def pairs_file(tmp_path: Path, rows: list[tuple]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p, "chosen": c, "rejected": r}) + "\n"
                            for i, (p, c, r) in enumerate(rows)))
    return path


def test_identical_pairs_are_counted_warned_about_once_and_dropped(tmp_path, tokenizer):
    from dpo3d.pairs.pair_set import load_pairs

    path = pairs_file(tmp_path, [("a", "x", "y"), ("b", "same", "same"), ("c", "u", "v"), ("d", "z", "z"), ("e", "w", "w")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = load_pairs(str(path), tokenizer, 64, cache=None)
    assert [r["id"] for r in pairs.records] == ["p0", "p2"] and len(pairs.chosen) == len(pairs.rejected) == 2
    assert pairs.identical == 3
    about = [str(w.message) for w in caught if "identical" in str(w.message)]
    assert len(about) == 1 and "3" in about[0] and str(path) in about[0] and "keep" in about[0], about


def test_the_flag_keeps_identical_pairs(tmp_path, tokenizer):
    from dpo3d.pairs.pair_set import load_pairs

    path = pairs_file(tmp_path, [("a", "x", "y"), ("b", "same", "same")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = load_pairs(str(path), tokenizer, 64, cache=None, keep_identical=True)
    assert len(pairs) == 2 and pairs.chosen[1] == pairs.rejected[1]
    assert not [w for w in caught if "identical" in str(w.message)]


def test_only_identical_pairs_is_a_record_error_naming_the_flag(tmp_path, tokenizer):
    from dpo3d.pairs.pair_set import load_pairs

    path = pairs_file(tmp_path, [("a", "x", "x"), ("b", "y", "y")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RecordError, match="keep"):
            load_pairs(str(path), tokenizer, 64, cache=None)


def test_identical_chat_pairs_are_dropped_too(tmp_path, tokenizer):
    from dpo3d.pairs.pair_set import load_pairs

    turn = [{"role": "assistant", "content": "7"}]
    path = pairs_file(tmp_path, [([{"role": "user", "content": "prime?"}], turn, turn), ("b", "x", "y")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = load_pairs(str(path), tokenizer, 64, cache=None)
    assert [r["id"] for r in pairs.records] == ["p1"]


def test_the_flag_has_one_help_text_for_the_configs():
    from dpo3d.pairs import pair_set

    assert "ln 2" in pair_set.KEEP_IDENTICAL_HELP and "identical" in pair_set.KEEP_IDENTICAL_HELP


# --------------------------------------------------------------------------- a launch that formed no group (7 cases)


LAUNCHED = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
LAUNCHER = Path(sys.executable).parent / "accelerate"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the fault is a GPU launch on a machine without GPUs")


def launched(monkeypatch, **overrides) -> None:
    for name, value in {**LAUNCHED, **overrides}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def alone(monkeypatch):
    """A single-process Accelerator, as each process of such a launch gets one; no process group is ever made
    here (one process with LOCAL_RANK set would wait for its peer: that rendezvous fails at once instead)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    def no_rendezvous(*args, **kwargs):
        raise RuntimeError("this test makes no process group")

    monkeypatch.setattr(torch.distributed, "init_process_group", no_rendezvous)
    for name in (*LAUNCHED, "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator()
    assert accelerator.num_processes == 1
    yield accelerator
    AcceleratorState._reset_state(reset_partial_state=True)


@no_gpu
@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_gpu_launch_without_gpus_is_refused_on_every_rank(monkeypatch, alone, rank):
    from dpo3d.training import sharding

    launched(monkeypatch, RANK=rank, LOCAL_RANK=rank)  # what the launcher set around it
    with pytest.raises(ValueError) as caught:
        sharding.check_launch(alone)
    message = str(caught.value)
    assert "WORLD_SIZE=2" in message and "--device cpu" in message and one_line(message)


def test_a_launch_whose_processes_run_alone_is_refused_whatever_the_device(monkeypatch):
    from accelerate.utils import DistributedType

    from dpo3d.training import sharding

    launched(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    single = SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1, device=torch.device("cuda", 0))
    with pytest.raises(ValueError, match="WORLD_SIZE=2") as caught:
        sharding.check_launch(single)
    assert one_line(caught.value) and "--device cpu" not in str(caught.value)


def test_a_launch_asking_for_more_gpus_than_there_are_is_refused(monkeypatch):
    from dpo3d.training import sharding

    launched(monkeypatch, LOCAL_WORLD_SIZE="8", LOCAL_RANK="5", WORLD_SIZE="8", RANK="5")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError) as caught:
        sharding.check_devices(cpu=False)
    message = str(caught.value)
    assert "LOCAL_WORLD_SIZE=8" in message and "--num_processes 2" in message and one_line(message)
    sharding.check_devices(cpu=True)  # the CPU has room for any number of processes


def test_a_plain_run_and_a_whole_group_pass(monkeypatch):
    from accelerate.utils import DistributedType

    from dpo3d.training import sharding

    for name in LAUNCHED:
        monkeypatch.delenv(name, raising=False)
    sharding.check_devices(cpu=False)
    sharding.check_launch(SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1, device=torch.device("cpu")))
    launched(monkeypatch)
    sharding.check_launch(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2, device=torch.device("cpu")))
    launched(monkeypatch, WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    sharding.check_launch(SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1, device=torch.device("cpu")))


@no_gpu
def test_train_dpo_in_such_a_launch_writes_nothing(tmp_path, monkeypatch, alone, tiny_model_dir):
    from dpo3d_cli.app import app

    monkeypatch.setenv("DPO3D_CACHE", str(tmp_path / "cache"))
    pairs = pairs_file(tmp_path, [("a", "x", "y"), ("b", "u", "v")])
    launched(monkeypatch, RANK="0", LOCAL_RANK="0")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--out", str(out),
                                      "--max-steps", "1", "--batch-size", "1", "--grad-accum", "1", "--probe-size", "1",
                                      "--no-probe-greedy", "--probe-samples", "0"])
    assert result.exit_code == 2, result.output
    assert "--device cpu" in result.output and "WORLD_SIZE=2" in result.output
    assert not out.exists()


LAUNCHED_SCRIPT = """
import os
from accelerate import Accelerator
from dpo3d.training import sharding
accelerator = Accelerator()
try:
    sharding.check_launch(accelerator)
    outcome = "went on"
except ValueError as err:
    outcome = f"refused: {err}"
# one write of less than a pipe's atomic size: the two processes' lines never interleave
os.write(1, f"rank {os.environ['RANK']} ({accelerator.num_processes} process) {outcome}\\n".encode())
"""


@no_gpu
@pytest.mark.skipif(not LAUNCHER.exists(), reason="accelerate CLI")
def test_the_ddp_config_launched_on_a_machine_without_gpus_is_refused_on_both_processes(tmp_path):
    from .launching import port_args

    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED_SCRIPT)
    result = subprocess.run(
        [str(LAUNCHER), "launch", *port_args(), "--config_file", str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
         "--num_processes", "2", str(script)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("rank "))
    assert [line.split(" (")[0] for line in lines] == ["rank 0", "rank 1"], result.stdout
    assert all("refused" in line and "--device cpu" in line for line in lines), result.stdout


# --------------------------------------------------------------------------- compare -o (4 cases)


@pytest.fixture
def a_run(tmp_path) -> Path:
    run = tmp_path / "rm"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"steps": 4, "extra": {"task": "rm"}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "eval_accuracy": 0.5 + s / 10}) + "\n" for s in range(5)))
    return run


def compare(*args: str):
    from dpo3d_cli.app import app

    return CliRunner().invoke(app, ["compare", *args], env={"COLUMNS": "300"})


def printed_figure(output: str) -> Path:
    (line,) = [line for line in output.splitlines() if line.startswith("figure → ")]
    return Path(line.removeprefix("figure → ").strip())


def test_compare_prints_the_path_it_writes(a_run, tmp_path):
    target = tmp_path / "somedir"
    result = compare(str(a_run), "-o", str(target))
    assert result.exit_code == 0, result.output
    shown = printed_figure(result.output)
    assert shown.is_file() and shown.read_bytes().startswith(b"\x89PNG")
    assert [p for p in tmp_path.iterdir() if p.suffix == ".png" or p.name == "somedir"] == [shown]


def test_compare_into_an_existing_folder_writes_into_it(a_run, tmp_path):
    folder = tmp_path / "figs"
    folder.mkdir()
    result = compare(str(a_run), "-o", str(folder))
    assert result.exit_code == 0, result.output
    shown = printed_figure(result.output)
    assert shown == folder / "compare.png" and shown.is_file()


def test_compare_keeps_a_png_path_as_given(a_run, tmp_path):
    result = compare(str(a_run), "-o", str(tmp_path / "fig4.png"))
    assert result.exit_code == 0, result.output
    assert printed_figure(result.output) == tmp_path / "fig4.png" and (tmp_path / "fig4.png").is_file()


def test_compare_refuses_a_format_it_cannot_write_before_reading_the_runs(tmp_path):
    result = compare(str(tmp_path / "no-such-run"), "-o", str(tmp_path / "fig.xyz"))
    assert result.exit_code == 2
    assert "fig.xyz" in result.output and "--out" in result.output and "run_config" not in result.output
