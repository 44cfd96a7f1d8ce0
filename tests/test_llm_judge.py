"""The LLM judge with a fake OpenAI client: parsing, rubric, cache, retries, order, secrecy."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import openai
import pytest
import typer
from typer.testing import CliRunner

from dpo3d.judges import llm_judge, rubric
from dpo3d.judges.llm_judge import LLMJudge, LLMJudgeConfig, summary
from dpo3d.judges.rubric import DEFAULT_RUBRIC, judge_messages, load_rubric, parse_score, render_rubric

try:  # the openai client's HTTP library: httpx2 in recent releases, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai
    import httpx

SECRET = "sk-test-9f8e7d6c5b4a-NEVER-PRINT"


# --------------------------------------------------------------------------- a fake client


def reply(text: str):
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))])


class FakeClient:
    """Answers ``chat.completions.create`` with ``answer(kwargs)``; counts and records calls."""

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kwargs):
        with self._lock:
            self.calls.append(kwargs)
        outcome = self.answer(kwargs)
        if isinstance(outcome, BaseException):
            raise outcome
        return reply(outcome)


def status_error(cls, code: int, message: str):
    request = httpx.Request("POST", "http://judge.test/v1/chat/completions")
    response = httpx.Response(code, request=request)
    return cls(message, response=response, body=None)


def connection_error():
    return openai.APIConnectionError(request=httpx.Request("POST", "http://judge.test/v1/chat/completions"))


def config(**overrides) -> LLMJudgeConfig:
    fields = dict(base_url="http://judge.test/v1", model="judge-7b", backoff_s=1.0)
    fields.update(overrides)
    return LLMJudgeConfig(**fields)


RECORDS = [
    {"id": "a", "prompt": "What is 2+2?", "completion": "2+2 = 4. The answer is 4.", "answer": "4"},
    {"id": "b", "prompt": "What is 3*3?", "completion": "3*3 = 6.", "answer": 9},
]


# --------------------------------------------------------------------------- parse_score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Score: 4", 4),
        ("score:3", 3),
        ("Score 1-5: 4", 4),  # the scale restated is not the score
        ("On a score of 1 to 5, I give it a 4.", 4),
        ("Rate from 1 to 5. Score: 2", 2),
        ("**Rating:** 5/5", 5),
        ("Rating: **3**", 3),
        ("4", 4),
        ("  2.\n", 2),
        ("I'd give it a 3 out of 5", 3),
        ("This deserves 4/5.", 4),
        ('{"score": 2}', 2),
        ('{"reason": "fine", "score": "5"}', 5),
        ("[[4]]", 4),
        ("Final verdict: [[1]]", 1),
        ("The score is 3.", 3),
        ("a score of 2", 2),
        ("Score (1-5): 4", 4),
        ("The working is right. Grade: 5", 5),
        # the last explicit mention wins: a rubric restated first, then the verdict
        ("A score of 5 means perfect, a score of 1 means wrong. Here: Score: 2", 2),
        ("Score: 2\nOn reflection, final score: 4", 4),
        # an explicit mention beats a bare number later on
        ("Score: 3\n\nSteps 1 and 2 were fine.", 3),
        # a math answer's fraction is not a score; the named one counts
        ("Score: 4\nIndeed 1/2 + 1/3 = 5/6.", 4),
        ("I'd rate it 4 out of 5; an earlier draft got 2/5, now 4 out of 5", 4),
    ],
)
def test_parse_score_reads_the_common_forms(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "no number here at all",
        "Score: 0",
        "6",
        "Score: 6",
        "10/10",
        "Score: 10/10",
        "Score: 4/10",  # a 1-10 scale is not ours
        "Rating: 0/5",
        "Score: 4.5",
        "[[7]]",
        "Steps 1, 2 and 3 are right",  # several bare numbers: none is the score
        "The answer 1/2 is wrong",
        "Score: 4, no wait, Score: 9",  # the last explicit mention is out of range
    ],
)
def test_parse_score_gives_none_when_nothing_valid(text):
    assert parse_score(text) is None


# --------------------------------------------------------------------------- rubric


def test_load_rubric_accepts_a_template_with_the_placeholders(tmp_path):
    path = tmp_path / "rubric.txt"
    path.write_text('Q: {question}\nA: {response}\nReply as {"score": N}.', encoding="utf-8")
    text = load_rubric(path)
    assert text.startswith("Q: {question}")
    # other braces stay as written; only the placeholders are filled
    assert render_rubric(text, "why?", "because", None) == 'Q: why?\nA: because\nReply as {"score": N}.'


def test_load_rubric_without_response_placeholder_is_a_clear_error(tmp_path):
    path = tmp_path / "rubric.txt"
    path.write_text("Grade this: {question}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\{response\}"):
        load_rubric(path)


def test_load_rubric_without_any_placeholder_names_both(tmp_path):
    path = tmp_path / "rubric.txt"
    path.write_text("Grade it 1-5.", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks the placeholder\(s\) \{question\}, \{response\}"):
        load_rubric(path)


def test_load_rubric_empty_or_missing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_rubric(empty)
    with pytest.raises(FileNotFoundError, match="rubric file not found"):
        load_rubric(tmp_path / "nope.txt")


def test_config_rejects_a_bad_rubric_text():
    with pytest.raises(ValueError, match="placeholder"):
        config(rubric="no placeholders")


def test_default_rubric_has_the_papers_five_levels():
    for level in "12345":
        assert f"\n{level} - " in DEFAULT_RUBRIC
    rendered = render_rubric(DEFAULT_RUBRIC, "Q?", "A!", "42")
    assert "Q?" in rendered and "A!" in rendered and "42" in rendered
    assert "{question}" not in rendered and "{response}" not in rendered and "{reference}" not in rendered


def test_placeholders_inside_the_record_are_not_expanded():
    rendered = render_rubric("Q={question} R={response} G={reference}", "{response}", "x", None)
    assert rendered == "Q={response} R=x G=" + rubric.NO_REFERENCE


# --------------------------------------------------------------------------- messages


def test_chat_message_prompts_and_completions():
    record = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "What is 5-3?"},
        ],
        "completion": [{"role": "assistant", "content": "It is 2."}],
        "reference": "2",
    }
    (message,) = judge_messages(record, "Q:{question}|A:{response}|R:{reference}")
    assert message == {"role": "user", "content": "Q:What is 5-3?|A:It is 2.|R:2"}


def test_reference_falls_back_to_answer_and_formats_numbers():
    (message,) = judge_messages(
        {"prompt": "p", "completion": "c", "answer": 145.0}, "{question}{response}[{reference}]"
    )
    assert message["content"] == "pc[145]"


def test_chat_prompts_reach_the_client_as_the_last_user_turn():
    client = FakeClient(lambda kwargs: "Score: 5")
    record = {
        "prompt": [{"role": "user", "content": "old"}, {"role": "user", "content": "Compute 7*6."}],
        "completion": [{"role": "assistant", "content": "42"}],
    }
    (out,) = LLMJudge(config(), client=client).judge([record])
    content = client.calls[0]["messages"][0]["content"]
    assert "Compute 7*6." in content and "old" not in content and "42" in content
    assert out["score"] == 5.0
    assert out["prompt"] == record["prompt"]  # the record passes through untouched


# --------------------------------------------------------------------------- judging


def test_judge_adds_the_fields_and_sends_the_request():
    client = FakeClient(
        lambda kwargs: (
            "Correct and complete.\nScore: 5" if "2+2" in kwargs["messages"][0]["content"] else "Score: 2"
        )
    )
    out = list(LLMJudge(config(max_tokens=99), client=client).judge(RECORDS))
    assert [r["id"] for r in out] == ["a", "b"]
    assert out[0]["score"] == 5.0 and out[1]["score"] == 2.0
    assert isinstance(out[0]["score"], float)
    assert out[0]["judge"] == "llm:judge-7b"
    assert out[0]["verdict"] == {"reply": "Correct and complete.\nScore: 5"}
    assert out[1]["verdict"] == {"reply": "Score: 2"}  # no error: both replies gave a score
    call = client.calls[0]
    assert call["model"] == "judge-7b" and call["temperature"] == 0.0 and call["max_tokens"] == 99
    assert summary(out) == {
        "judged": 2,
        "scored": 2,
        "failures": 0,
        "mean": 3.5,
        "histogram": {1: 0, 2: 1, 3: 0, 4: 0, 5: 1},
    }


def test_unparseable_reply_keeps_the_text_and_reports():
    client = FakeClient(lambda kwargs: "I cannot decide.")
    (out,) = LLMJudge(config(), client=client).judge(RECORDS[:1])
    assert out["score"] is None
    assert out["verdict"] == {"reply": "I cannot decide.", "error": "no score 1-5 found in the judge's reply"}


def test_an_earlier_verdict_is_replaced_when_the_new_call_succeeds():
    client = FakeClient(lambda kwargs: "Score: 3")
    earlier = {**RECORDS[0], "score": None, "judge": "llm:old", "verdict": {"reply": None, "error": "old failure"}}
    (out,) = LLMJudge(config(), client=client).judge([earlier])
    assert out["score"] == 3.0 and out["judge"] == "llm:judge-7b" and out["verdict"] == {"reply": "Score: 3"}


def test_order_is_preserved_under_concurrency():
    # replies arrive in reverse: the first request waits longest
    count = 16

    def answer(kwargs):
        content = kwargs["messages"][0]["content"]
        index = int(content.split("item-")[1].split()[0])
        time.sleep(0.002 * (count - index))
        return f"Score: {index % 5 + 1}"

    records = [{"id": i, "prompt": f"item-{i} ?", "completion": "x"} for i in range(count)]
    client = FakeClient(answer)
    seen = []
    out = list(LLMJudge(config(concurrency=8), client=client).judge(records, on_progress=seen.append))
    assert [r["id"] for r in out] == list(range(count))
    assert [r["score"] for r in out] == [float(i % 5 + 1) for i in range(count)]
    assert seen == [1] * count


def test_concurrency_is_bounded():
    active = 0
    peak = 0
    lock = threading.Lock()

    def answer(kwargs):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.01)
        with lock:
            active -= 1
        return "Score: 4"

    records = [{"prompt": f"q{i}", "completion": "a"} for i in range(12)]
    list(LLMJudge(config(concurrency=3), client=FakeClient(answer)).judge(records))
    assert 1 < peak <= 3


# --------------------------------------------------------------------------- retries


def test_transient_errors_are_retried_with_exponential_backoff(monkeypatch):
    outcomes = [
        connection_error(),
        status_error(openai.RateLimitError, 429, "slow down"),
        status_error(openai.InternalServerError, 503, "busy"),
        "Score: 4",
    ]
    client = FakeClient(lambda kwargs: outcomes.pop(0))
    waits: list[float] = []
    monkeypatch.setattr(llm_judge.random, "uniform", lambda a, b: 1.0)  # no jitter: exact waits
    judge = LLMJudge(config(backoff_s=0.5, max_retries=4), client=client, sleep=waits.append)
    (out,) = judge.judge(RECORDS[:1])
    assert out["score"] == 4.0 and out["verdict"] == {"reply": "Score: 4"}
    assert len(client.calls) == 4
    assert waits == [0.5, 1.0, 2.0]
    assert judge.requests == 4


def test_backoff_has_jitter_within_bounds():
    errors = [connection_error() for _ in range(3)]
    client = FakeClient(lambda kwargs: errors.pop(0) if errors else "Score: 1")
    waits: list[float] = []
    list(LLMJudge(config(backoff_s=1.0), client=client, sleep=waits.append).judge(RECORDS[:1]))
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):
        assert 0.5 * 2**attempt <= wait <= 1.5 * 2**attempt


def test_gives_up_after_max_retries_and_reports():
    client = FakeClient(lambda kwargs: status_error(openai.InternalServerError, 500, "server exploded"))
    waits: list[float] = []
    (out,) = LLMJudge(config(max_retries=2), client=client, sleep=waits.append).judge(RECORDS[:1])
    assert len(client.calls) == 3 and len(waits) == 2
    assert out["score"] is None and out["verdict"]["reply"] is None
    assert out["verdict"]["error"].startswith("InternalServerError (500)")
    assert out["judge"] == "llm:judge-7b"


def test_auth_error_is_not_retried_and_is_reported(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    client = FakeClient(
        lambda kwargs: status_error(openai.AuthenticationError, 401, f"Incorrect API key provided: {SECRET}")
    )
    waits: list[float] = []
    (out,) = LLMJudge(config(), client=client, sleep=waits.append).judge(RECORDS[:1])
    assert len(client.calls) == 1 and waits == []
    assert out["score"] is None
    assert out["verdict"]["error"].startswith("AuthenticationError (401)")
    assert SECRET not in out["verdict"]["error"] and "***" in out["verdict"]["error"]


def test_bad_request_is_not_retried():
    client = FakeClient(lambda kwargs: status_error(openai.BadRequestError, 400, "max_tokens too large"))
    waits: list[float] = []
    (out,) = LLMJudge(config(), client=client, sleep=waits.append).judge(RECORDS[:1])
    assert len(client.calls) == 1 and waits == []
    assert "BadRequestError (400)" in out["verdict"]["error"]


def test_one_failure_does_not_sink_the_others():
    client = FakeClient(
        lambda kwargs: (
            status_error(openai.BadRequestError, 400, "no")
            if "3*3" in kwargs["messages"][0]["content"]
            else "Score: 5"
        )
    )
    out = list(LLMJudge(config(), client=client).judge(RECORDS))
    assert out[0]["score"] == 5.0 and out[0]["verdict"] == {"reply": "Score: 5"}
    assert out[1]["score"] is None and "BadRequestError" in out[1]["verdict"]["error"]
    assert summary(out)["failures"] == 1


# --------------------------------------------------------------------------- cache and secrecy


def test_second_run_is_served_from_the_cache(tmp_path):
    path = tmp_path / "cache" / "judge.sqlite"
    first = FakeClient(lambda kwargs: "Score: 4")
    with LLMJudge(config(cache_path=path), client=first) as judge:
        out1 = list(judge.judge(RECORDS))
    assert len(first.calls) == 2 and path.is_file()

    second = FakeClient(lambda kwargs: "Score: 1")  # would disagree, were it asked
    with LLMJudge(config(cache_path=path), client=second) as judge:
        out2 = list(judge.judge(RECORDS))
        assert judge.requests == 0 and judge.cache_hits == 2
    assert second.calls == []
    assert out2 == out1


def test_cache_key_changes_with_what_decides_the_reply(tmp_path):
    path = tmp_path / "judge.sqlite"
    client = FakeClient(lambda kwargs: "Score: 4")
    for cfg in (
        config(cache_path=path),
        config(cache_path=path, model="other-judge"),
        config(cache_path=path, max_tokens=17),
        config(cache_path=path, temperature=0.7),
        config(cache_path=path, base_url="http://elsewhere.test/v1"),
        config(cache_path=path, rubric="Rate {question} -> {response}"),
    ):
        with LLMJudge(cfg, client=client) as judge:
            list(judge.judge(RECORDS[:1]))
    assert len(client.calls) == 6
    # and a trailing slash on the URL is the same endpoint
    with LLMJudge(config(cache_path=path, base_url="http://judge.test/v1/"), client=client) as judge:
        list(judge.judge(RECORDS[:1]))
    assert len(client.calls) == 6


def test_failures_are_not_cached(tmp_path):
    path = tmp_path / "judge.sqlite"
    failing = FakeClient(lambda kwargs: status_error(openai.BadRequestError, 400, "no"))
    with LLMJudge(config(cache_path=path), client=failing) as judge:
        list(judge.judge(RECORDS[:1]))
    working = FakeClient(lambda kwargs: "Score: 2")
    with LLMJudge(config(cache_path=path), client=working) as judge:
        (out,) = judge.judge(RECORDS[:1])
    assert len(working.calls) == 1 and out["score"] == 2.0


def test_api_key_never_reaches_records_or_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    path = tmp_path / "judge.sqlite"
    cfg = config(cache_path=path, api_key_env="MY_JUDGE_KEY")
    assert cfg.api_key() == SECRET
    assert SECRET not in repr(cfg)
    client = FakeClient(lambda kwargs: "Score: 3")
    with LLMJudge(cfg, client=client) as judge:
        out = list(judge.judge(RECORDS))
    assert SECRET not in json.dumps(out)
    assert SECRET not in json.dumps(client.calls)  # requests carry no key in their body
    assert SECRET.encode() not in path.read_bytes()


def test_real_client_gets_the_key_from_the_env_or_a_dummy(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    judge = LLMJudge(config(api_key_env="MY_JUDGE_KEY", timeout_s=7))
    client = judge.client
    assert isinstance(client, openai.OpenAI)
    assert (
        client.api_key == SECRET
        and client.max_retries == 0
        and str(client.base_url).startswith("http://judge.test/v1")
    )
    monkeypatch.delenv("MY_JUDGE_KEY")
    assert LLMJudge(config(api_key_env="MY_JUDGE_KEY")).client.api_key == "EMPTY"


def test_connection_refused_is_reported_not_raised():
    # nothing listens on port 9 of loopback (discard); the real client fails to connect
    judge = LLMJudge(
        config(base_url="http://127.0.0.1:9/v1", max_retries=1, timeout_s=5), sleep=lambda s: None
    )
    (out,) = judge.judge(RECORDS[:1])
    assert out["score"] is None and out["verdict"]["error"].startswith("APIConnectionError")


# --------------------------------------------------------------------------- the command


def command_app() -> typer.Typer:
    """`judge llm` alone, behind the command layer's one error boundary as in the real app."""
    from dpo3d_cli.common import user_errors
    from dpo3d_cli.judge_llm import llm_command

    app = typer.Typer()
    app.command()(user_errors(llm_command))
    return app


def test_command_judges_a_file_with_the_cache(tmp_path, monkeypatch):
    from dpo3d_cli import judge_llm

    clients: list[FakeClient] = []
    real = judge_llm.LLMJudge

    def with_fake(cfg):
        client = FakeClient(lambda kwargs: "Score: 4" if "2+2" in kwargs["messages"][0]["content"] else "hmm")
        clients.append(client)
        return real(cfg, client=client)

    monkeypatch.setattr(judge_llm, "LLMJudge", with_fake)
    data = tmp_path / "cands.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    out = tmp_path / "judged.jsonl"
    cache = tmp_path / "c.sqlite"
    args = [
        str(data),
        "-o",
        str(out),
        "--base-url",
        "http://judge.test/v1",
        "--judge-model",
        "m",
        "--cache",
        str(cache),
    ]
    result = CliRunner().invoke(command_app(), args)
    assert result.exit_code == 0, result.output
    judged = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in judged] == [4.0, None]
    assert [r["verdict"] for r in judged] == [
        {"reply": "Score: 4"}, {"reply": "hmm", "error": "no score 1-5 found in the judge's reply"}]
    assert "2 judged, mean score 4.00; scores 1:0 2:0 3:0 4:1 5:0; 1 failed" in " ".join(
        result.output.split()
    )
    rerun = CliRunner().invoke(command_app(), args)
    # the scored reply comes from the cache; the one without a score was not cached and is asked again
    assert rerun.exit_code == 0 and len(clients[-1].calls) == 1 and "3*3" in clients[-1].calls[0]["messages"][0]["content"]
    assert "1 requests, 1 from cache" in " ".join(rerun.output.split())


def test_command_reads_a_parquet_file_with_mapped_columns_and_writes_parquet(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from datasets import Dataset

    from dpo3d_cli import judge_llm

    real = judge_llm.LLMJudge
    client = FakeClient(lambda kwargs: "Score: 4" if "2+2" in kwargs["messages"][0]["content"] else "hmm")
    monkeypatch.setattr(judge_llm, "LLMJudge", lambda cfg: real(cfg, client=client))
    data = tmp_path / "cands.parquet"
    Dataset.from_list([{"id": r["id"], "prompt": r["prompt"], "response": r["completion"]} for r in RECORDS]).to_parquet(str(data))
    out = tmp_path / "judged.parquet"
    args = [str(data), "--columns", "completion=response", "-o", str(out),
            "--base-url", "http://judge.test/v1", "--judge-model", "m", "--no-cache"]
    result = CliRunner().invoke(command_app(), args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert [r["score"] for r in table] == [4.0, None] and [r["judge"] for r in table] == ["llm:m", "llm:m"]
    assert [r["verdict"] for r in table] == [
        {"reply": "Score: 4", "error": None}, {"reply": "hmm", "error": "no score 1-5 found in the judge's reply"}]
    assert [r["completion"] for r in table] == [r["completion"] for r in RECORDS]


def test_command_reports_a_bad_rubric_and_missing_fields(tmp_path):
    data = tmp_path / "cands.jsonl"
    data.write_text(json.dumps({"prompt": "q"}) + "\n", encoding="utf-8")
    rubric = tmp_path / "r.txt"
    rubric.write_text("just {question}", encoding="utf-8")
    base = ["--base-url", "http://judge.test/v1", "--judge-model", "m", "--no-cache"]
    result = CliRunner().invoke(command_app(), [str(data), *base, "--rubric", str(rubric)])
    assert result.exit_code == 2 and "{response}" in result.output
    result = CliRunner().invoke(command_app(), [str(data), *base])
    assert result.exit_code == 2 and "missing field 'completion'" in result.output


def test_command_needs_base_url_and_model(tmp_path, monkeypatch):
    monkeypatch.delenv("DPO3D_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("DPO3D_JUDGE_MODEL", raising=False)
    result = CliRunner().invoke(command_app(), ["-", "--judge-model", "m"])
    assert result.exit_code == 2 and "--base-url" in result.output
