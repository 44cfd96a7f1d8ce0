"""The LLM judge: another model grades each completion on the paper's 1-5 rubric.

Any OpenAI-compatible chat endpoint works (OpenAI, vLLM, `transformers serve`, ...),
through the ``openai`` client. Each record's question (its prompt, or the last user
turn of a chat prompt) and answer (its completion, or the assistant turns) are put
into a rubric prompt; the judge's reply is parsed for a score 1-5 (both in :mod:`.rubric`).

Requests run on a thread pool (``concurrency`` at a time), transient failures
(connection, timeout, 429, 5xx) are retried with exponential back-off and jitter; a server's
``Retry-After`` (seconds or an HTTP date) is honoured, every wait capped at ``max_wait_s``
(60 s by default). Replies that carry a score are kept in a disk cache keyed by everything
that decides them, so a rerun with the same inputs sends no request for them; a reply without
a score is never cached, so a rerun asks again. A cache file found corrupt is started afresh
(one warning); one locked by another process is waited for ``cache_wait_s`` (30 s by default),
then the run stops with one line naming the file. The API key is read from an environment
variable and is never written anywhere: where a reply or an error quotes it, it is replaced by
``***`` before the record, the cache or a message sees it.

Each record comes back with ``score`` (float 1.0-5.0, or None when the reply did
not parse or the call failed), ``judge`` (``"llm:<model>"``) and ``verdict``
``{"reply": the raw reply or None, "error": what went wrong}``, ``error`` only when
something did. Records stream through a window of ``2 * concurrency`` requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo3d.config.fields import option
from dpo3d.data.cache import cache_dir
from dpo3d.data.formats import as_completion

from . import judge_failed
from .api_errors import DUMMY_KEY, is_transient, redact, retry_after, short_error
from .base import Judge, ScoreTally
from .reply_cache import CACHE_WAIT_S, ReplyCache
from .rubric import DEFAULT_RUBRIC, check_rubric, judge_messages, parse_score

NAME = "llm"

#: the longest wait between two tries by default, whatever the back-off or the server's Retry-After says
MAX_WAIT_S = 60.0

# --------------------------------------------------------------------------- configuration and cache



def default_cache_path() -> Path:
    """Where replies are cached unless told otherwise: ``$DPO3D_CACHE/llm_judge.sqlite``
    (default ``~/.cache/dpo3d/llm_judge.sqlite``); shared by `judge llm`, `eval-math --judge llm`
    and the study, so a rerun of any of them asks nothing again."""
    return cache_dir() / "llm_judge.sqlite"

@dataclass(frozen=True)
class LLMJudgeConfig:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable; the key itself is never stored
    rubric: str = DEFAULT_RUBRIC
    temperature: float = 0.0
    max_tokens: int = 256
    concurrency: int = 8
    max_retries: int = 4  # tries after the first, for transient errors only
    backoff_s: float = 1.0  # first wait; doubles each retry, with jitter
    timeout_s: float = 60.0  # per request
    max_wait_s: float = option(
        MAX_WAIT_S, "The longest wait before a retry, in seconds: a server's Retry-After (seconds or an HTTP date, "
        "sent with 429 and 503) is honoured up to this, and the exponential back-off grows no further.",
        flags=("--max-wait",), min=0.0)
    cache_wait_s: float = option(
        CACHE_WAIT_S, "Seconds to wait for the reply cache while another process holds its lock; then the run "
        "stops with one line naming the file.", flags=("--cache-wait",), min=0.0)
    cache_path: str | os.PathLike | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # more request fields (e.g. seed)

    def __post_init__(self) -> None:
        if not self.base_url.strip():
            raise ValueError("the judge needs a base URL (e.g. http://localhost:8000/v1)")
        if not self.model.strip():
            raise ValueError("the judge needs a model name")
        check_rubric(self.rubric)
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be 0 or more, got {self.max_retries}")
        if self.backoff_s < 0:
            raise ValueError(f"the back-off must be 0 s or more, got {self.backoff_s}")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout_s}")
        if self.max_wait_s < 0:
            raise ValueError(f"the longest wait before a retry (max_wait_s) must be 0 s or more, got {self.max_wait_s}")
        if self.cache_wait_s < 0:
            raise ValueError(f"the wait for a locked cache (cache_wait_s) must be 0 s or more, got {self.cache_wait_s}")

    @property
    def name(self) -> str:
        return f"{NAME}:{self.model}"

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env) or DUMMY_KEY

    def request(self, messages: list[dict]) -> dict:
        """The keyword arguments of one chat completion request (no key in it)."""
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra,
        }

    def cache_key(self, messages: list[dict]) -> str:
        """sha256 of everything that decides the reply: endpoint, model, messages, sampling."""
        fields = {
            "base_url": self.base_url.rstrip("/"),
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "extra": dict(self.extra),
        }
        blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the judge


class LLMJudge(Judge):
    """Grades records with a chat model. ``client``: an ``openai.OpenAI`` (or a fake) to use."""

    def __init__(
        self,
        config: LLMJudgeConfig,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self._client = client
        self._client_lock = threading.Lock()
        self._sleep = sleep
        self.cache = ReplyCache(config.cache_path, config.cache_wait_s) if config.cache_path is not None else None
        #: how many requests were sent (retries included) and answered from the cache, last judge() call
        self.requests = 0
        self.cache_hits = 0
        self._count_lock = threading.Lock()
        self._tally = Tally()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.config.name

    def check(self, record: dict, source: str = "<input>", position: int | None = None) -> dict:
        """A ``prompt`` and ``completion`` the judge can read (or a TRL ``messages`` conversation)."""
        return as_completion(record, source, position)

    # the client is made on first use: a run answered wholly from the cache needs none
    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(
                    base_url=self.config.base_url,
                    api_key=self.config.api_key(),
                    timeout=self.config.timeout_s,
                    max_retries=0,  # retries are ours (is_transient, back-off)
                )
            return self._client

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _backoff(self, attempt: int, err: BaseException) -> float:
        """The back-off with jitter, or longer when the server asked for longer; never over ``max_wait_s``."""
        delay = self.config.backoff_s * (2**attempt) * random.uniform(0.5, 1.5)
        server = retry_after(err)
        if server is not None:
            delay = max(delay, server)
        return min(delay, self.config.max_wait_s)

    def _ask(self, messages: list[dict]) -> str:
        """The reply text for one request, retrying transient errors; raises the last error."""
        request = self.config.request(messages)
        attempt = 0
        while True:
            with self._count_lock:
                self.requests += 1
            try:
                response = self.client.chat.completions.create(**request)
            except Exception as err:
                if attempt >= self.config.max_retries or not is_transient(err):
                    raise
                self._sleep(self._backoff(attempt, err))
                attempt += 1
                continue
            choices = getattr(response, "choices", None) or []
            if not choices:
                raise ValueError("the judge's response has no choices")
            content = choices[0].message.content
            return content if isinstance(content, str) else ""

    def judge_one(self, record: Mapping) -> dict:
        """One record with ``score``, ``judge`` and ``verdict`` ``{reply, error?}`` (replacing an earlier judge's)."""
        verdict: dict[str, Any] = {"reply": None}
        out = {**record, "score": None, "judge": self.config.name, "verdict": verdict}
        try:
            messages = judge_messages(record, self.config.rubric)
        except ValueError as err:
            verdict["error"] = str(err)
            return out
        key = self.config.cache_key(messages)
        secret = self.config.api_key()
        reply = self.cache.get(key) if self.cache is not None else None
        if reply is not None and parse_score(reply) is None:
            reply = None  # an unscored reply an earlier version cached: ask again
        if reply is not None:
            with self._count_lock:
                self.cache_hits += 1
            reply = redact(reply, secret)
        else:
            try:
                reply = redact(self._ask(messages), secret)
            except Exception as err:
                verdict["error"] = short_error(err, secret)
                return out
            if self.cache is not None and parse_score(reply) is not None:
                self.cache.put(key, reply)  # only a reply that scored: a rerun asks again for the others
        verdict["reply"] = reply
        score = parse_score(reply)
        if score is None:
            verdict["error"] = "no score 1-5 found in the judge's reply"
        else:
            out["score"] = float(score)
        return out

    def judge(self, records: Iterable[Mapping], on_progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Every record judged, in input order; ``on_progress(1)`` after each one.

        Records are read as requests go out: ``concurrency`` run at once and as many wait behind
        them, so a slow reply holds back the output, never the other requests.
        """
        self.requests = 0
        self.cache_hits = 0
        self._tally = Tally()

        def work(record: Mapping) -> dict:
            judged = self.judge_one(record)
            if on_progress is not None:
                on_progress(1)
            return judged

        window = 2 * self.config.concurrency
        pending: deque = deque()
        with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="llm-judge") as pool:
            try:
                for record in records:
                    pending.append(pool.submit(work, record))
                    if len(pending) >= window:
                        yield self._tally.add(pending.popleft().result())
                while pending:
                    yield self._tally.add(pending.popleft().result())
            finally:
                for future in pending:  # the input failed or the caller stopped: send nothing more
                    future.cancel()

    def summary(self) -> str:
        """``judge llm: 2 judged, mean score 4.00; scores 1:0 ... 5:0; 1 failed; 1 requests, 1 from cache``."""
        stats = self._tally.as_dict()
        mean = f"{stats['mean']:.2f}" if stats["mean"] is not None else "n/a"
        histogram = " ".join(f"{score}:{count}" for score, count in stats["histogram"].items())
        return (
            f"judge llm: {stats['judged']} judged, mean score {mean}; scores {histogram}; "
            f"{stats['failures']} failed; {self.requests} requests, {self.cache_hits} from cache"
        )


class Tally:
    """Running counts of judged records: judged, scored, failures, and how many got each score 1-5."""

    def __init__(self) -> None:
        self.judged = 0
        self.failures = 0
        self.scores = ScoreTally()
        self.histogram = Counter()

    def add(self, record: dict) -> dict:
        self.judged += 1
        self.failures += judge_failed(record)
        score = record.get("score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            self.scores.add(score)
            self.histogram[score] += 1
        return record

    def as_dict(self) -> dict:
        return {
            "judged": self.judged,
            "scored": self.scores.count,
            "failures": self.failures,
            "mean": self.scores.mean,
            "histogram": {n: self.histogram[n] for n in range(1, 6)},
        }


def summary(records: Iterable[Mapping]) -> dict:
    """Counts for a report: judged, failures, mean score and the histogram of scores 1-5."""
    tally = Tally()
    for record in records:
        tally.add(record)  # type: ignore[arg-type]
    return tally.as_dict()
