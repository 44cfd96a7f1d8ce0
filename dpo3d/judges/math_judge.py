"""The math judge: is a completion's final answer the record's gold ``answer``?

The answer is read and compared by math-verify (HF), which parses LaTeX into SymPy
and compares values, so ``\\frac{1}{2}``, ``0.5`` and ``1/2`` agree, ``(0,1]`` is an
interval, ``\\text{(C)}`` is ``C`` and ``1,080`` is 1080. Its timeouts use SIGALRM,
which works only in a process's main thread, so batches run in worker processes
(never threads); a small batch, or ``workers=0``, runs in this process instead.

A completion's answer is its last ``\\boxed{}`` or an anchored "the answer is ...";
``lenient`` also accepts the last expression of the text, as some evaluations do.
Score: 1.0 when the answer is right, else 0.0.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dpo3d.data.inputs import chunks
from dpo3d.data.prompting import boxed_answer
from dpo3d.data.records import RecordError
from dpo3d.data.schema import is_text

from . import completion_text, scored
from .base import Judge

NAME = "math"

#: below this many answers, starting worker processes costs more than it saves
INLINE_BELOW = 64


@dataclass(frozen=True)
class MathJudgeConfig:
    lenient: bool = False  # also take the text's last expression when nothing is boxed or anchored
    timeout_s: float = 5.0  # per parse and per comparison (math-verify's alarm: whole seconds, a fraction rounds up)
    workers: int | None = None  # processes; None: one per CPU; 0: judge in this process
    chunk_size: int = 32  # answers sent to a worker at a time

    def __post_init__(self) -> None:
        if self.timeout_s < 1:
            raise ValueError(f"the math judge's timeout must be at least 1 s, got {self.timeout_s}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.chunk_size < 1:
            raise ValueError(f"the chunk size must be at least 1, got {self.chunk_size}")


# --------------------------------------------------------------------------- checking input


def gold_text(answer: str | int | float) -> str:
    """A gold answer as LaTeX text: numbers as written (145.0 -> '145'), strings stripped."""
    if isinstance(answer, bool):
        raise TypeError("a boolean is not an answer")
    if isinstance(answer, int):
        return str(answer)
    if isinstance(answer, float):
        return str(int(answer)) if answer.is_integer() else repr(answer)
    return answer.strip()


def check_candidate(record: Mapping, source: str = "<input>", line: int | None = None) -> None:
    """Raise RecordError unless the record has a ``completion`` and a non-empty gold ``answer``."""
    if "completion" not in record:
        raise RecordError(source, line, "missing field 'completion'")
    if not is_text(record["completion"]):
        raise RecordError(source, line, "field 'completion' should be a string or a list of chat messages")
    if "answer" not in record or record["answer"] is None:
        raise RecordError(source, line, "missing field 'answer' (the gold final answer the math judge checks against)")
    answer = record["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise RecordError(source, line, "field 'answer' should be a string or a number")
    if isinstance(answer, str) and not answer.strip():
        raise RecordError(source, line, "field 'answer' is empty")


# --------------------------------------------------------------------------- one answer


@lru_cache(maxsize=2)
def _configs(lenient: bool):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # math-verify's default normalisation (units, `\frac43`, `\dfrac`, every \boxed); the
    # answer must be boxed or anchored ("the answer is") unless lenient
    prediction = [
        LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=lenient),
        ExprExtractionConfig(try_extract_without_anchor=lenient),
    ]
    gold = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return prediction, gold


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout_s: float) -> list:
    # candidates of one prompt share their gold: parse it once per worker
    from math_verify import parse

    return parse("\\boxed{" + gold + "}", extraction_config=_configs(False)[1], parsing_timeout=_alarm(timeout_s))


def _shown(parsed: list) -> str | None:
    """The text math-verify read: its string fallback, else the SymPy value."""
    if not parsed:
        return None
    text = next((item for item in parsed if isinstance(item, str)), None)
    return text if text is not None else str(parsed[0])


def _alarm(timeout_s: float) -> int:
    """math-verify's SIGALRM counts whole seconds: a fractional timeout is rounded up."""
    return math.ceil(timeout_s)


def verify_answer(completion: str, gold: str, lenient: bool = False, timeout_s: float = 5.0) -> dict:
    """The verdict on one completion: ``{correct, status, pred, gold}``.

    ``status`` is ``correct``, ``wrong``, ``no_answer`` (nothing boxed or anchored),
    ``timeout`` (parsing or comparing ran past ``timeout_s``) or ``bad_gold``.
    Must run in a main thread (math-verify's SIGALRM).
    """
    from math_verify import parse, verify

    verdict = {"correct": False, "status": "wrong", "pred": None, "gold": gold}
    boxed = boxed_answer(completion)
    if boxed is not None and boxed == gold:
        # the very text of the gold: equal whatever it means, no need to parse it (a third of the time)
        return {**verdict, "correct": True, "status": "correct", "pred": boxed}
    gold_parsed = _parse_gold(gold, timeout_s)
    if not gold_parsed:
        return {**verdict, "status": "bad_gold"}
    started = time.monotonic()
    predicted = parse(
        completion, extraction_config=_configs(lenient)[0], extraction_mode="first_match", parsing_timeout=_alarm(timeout_s)
    )
    if not predicted:
        timed_out = time.monotonic() - started >= _alarm(timeout_s)
        return {**verdict, "status": "timeout" if timed_out else "no_answer"}
    verdict["pred"] = _shown(predicted)
    started = time.monotonic()
    if verify(gold_parsed, predicted, timeout_seconds=_alarm(timeout_s)):
        return {**verdict, "correct": True, "status": "correct"}
    if time.monotonic() - started >= _alarm(timeout_s):
        verdict["status"] = "timeout"
    return verdict


def _verify_chunk(jobs: Sequence[tuple[str, str]], lenient: bool, timeout_s: float) -> list[dict]:
    return [verify_answer(completion, gold, lenient, timeout_s) for completion, gold in jobs]


# --------------------------------------------------------------------------- many answers


def _warm_up() -> bool:
    return bool(_parse_gold("1", 5))


def _die_with_parent(parent: int | None) -> None:
    """A pool worker's initializer: end this worker when the process that started it dies, however it dies
    (a worker otherwise waits on its task queue forever: both ends of that pipe are its own).

    On Linux the kernel does it: PR_SET_PDEATHSIG sends SIGKILL when the parent ends. The parent is the
    forking thread's process: under ``fork`` the judging process (forked from its only thread, see
    :func:`_start_method`), under ``forkserver`` the fork server, which exits when the judging process
    dies, taking its workers with it. ``parent``: the pid expected (None: whatever the parent is now); a
    parent that died before the request took effect is caught by comparing. Elsewhere a daemon thread
    polls the parent's pid once a second."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _start_method() -> str:
    # fork is fastest (the workers inherit math-verify, nothing is re-imported) but only safe
    # while this process has one thread: a thread holding a lock at fork time (a progress
    # bar writing to stderr) leaves that lock held forever in the child. With threads about
    # (notebooks, a running progress bar), use forkserver.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


class MathJudge(Judge):
    """Judges many answers in worker processes; a :class:`~dpo3d.judges.base.Judge` owning the pool.

    Open it (or enter it) before starting threads of your own (a progress bar): the workers
    are started then. ``size_hint`` (how many answers will come, given here or to :meth:`open`)
    lets a small batch skip the pool and run in this process.
    """

    name = NAME
    size_probe = INLINE_BELOW  # below this many answers no pool starts: worth reading ahead to know

    def __init__(self, config: MathJudgeConfig = MathJudgeConfig(), size_hint: int | None = None):
        self.config = config
        self.workers = self._workers_for(size_hint)
        self._pool: ProcessPoolExecutor | None = None
        self._statuses: Counter = Counter()

    def _workers_for(self, size_hint: int | None) -> int:
        config = self.config
        workers = (os.cpu_count() or 1) if config.workers is None else config.workers
        if size_hint is not None:
            workers = min(workers, -(-size_hint // config.chunk_size))
            if size_hint < INLINE_BELOW:
                workers = 0
        if threading.current_thread() is not threading.main_thread():
            workers = max(workers, 1)  # SIGALRM needs a main thread: a worker process's is one
        return workers

    def check(self, record: dict, source: str = "<input>", position: int | None = None) -> None:
        check_candidate(record, source, position)

    def open(self, size_hint: int | None = None) -> MathJudge:
        if self._pool is not None:
            return self
        if size_hint is not None:
            self.workers = self._workers_for(size_hint)
        if self.workers > 0:
            import math_verify  # noqa: F401  - imported once here, inherited by forked workers

            method = _start_method()
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload([__name__])
            # a forked worker's parent is this process; a fork server's, the server
            parent = os.getpid() if method == "fork" else None
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                             initializer=_die_with_parent, initargs=(parent,))
            self._pool.submit(_warm_up).result()  # forks every worker now, before the caller's threads
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _verify_chunks(self, chunks: Iterable[tuple[Any, Sequence[tuple[str, str]]]]) -> Iterator[tuple[Any, list[dict]]]:
        """``(tag, verdicts)`` for each ``(tag, jobs)`` chunk, in order, reading chunks as it goes:
        with a pool, two chunks per worker are in flight (one running, one queued behind it)."""
        lenient, timeout_s = self.config.lenient, self.config.timeout_s
        if self._pool is None:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("use MathJudge as a context manager off the main thread (SIGALRM)")
            for tag, jobs in chunks:
                yield tag, _verify_chunk(jobs, lenient, timeout_s)
            return
        pending: deque = deque()
        try:
            for tag, jobs in chunks:
                pending.append((tag, self._pool.submit(_verify_chunk, jobs, lenient, timeout_s)))
                if len(pending) >= 2 * self.workers:
                    tag, future = pending.popleft()
                    yield tag, future.result()
            while pending:
                tag, future = pending.popleft()
                yield tag, future.result()
        finally:
            for _, future in pending:  # the input failed or the caller stopped: drop what is queued
                future.cancel()

    def verify_many(
        self, jobs: Sequence[tuple[str, str]], on_progress: Callable[[int], None] | None = None
    ) -> Iterator[dict]:
        """Verdicts for ``(completion_text, gold_text)`` jobs, in order."""
        for _, verdicts in self._verify_chunks((None, chunk) for chunk in chunks(jobs, self.config.chunk_size)):
            yield from verdicts
            if on_progress:
                on_progress(len(verdicts))

    def judge(self, records: Iterable[Mapping], on_progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Each record with ``score`` (1.0 right, 0.0 not), ``correct``, ``judge`` and ``verdict``,
        read and judged ``chunk_size`` records at a time.

        Records must pass :func:`check_candidate`; fields the judge does not know pass through.
        """
        self._statuses = Counter()
        jobs = (
            (chunk, [(completion_text(record["completion"]), gold_text(record["answer"])) for record in chunk])
            for chunk in chunks(records, self.config.chunk_size)
        )
        for chunk, verdicts in self._verify_chunks(jobs):
            for record, verdict in zip(chunk, verdicts, strict=True):
                correct = verdict["correct"]
                out = scored(record, NAME, 1.0 if correct else 0.0, verdict)
                out["correct"] = correct
                self._statuses[verdict["status"]] += 1
                yield out
            if on_progress:
                on_progress(len(verdicts))

    def summary(self) -> str:
        """``judge math: 12/24 right (50.0%); correct 12, wrong 8, no_answer 4``."""
        total = sum(self._statuses.values())
        right = self._statuses.get("correct", 0)
        share = f" ({right / total:.1%})" if total else ""
        details = ", ".join(f"{status} {count}" for status, count in self._statuses.most_common())
        return f"judge math: {right}/{total} right{share}; {details}"


def judge_math(
    records: Sequence[Mapping],
    config: MathJudgeConfig = MathJudgeConfig(),
    on_progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Judge ``records`` (see :meth:`MathJudge.judge`) with a pool sized to them."""
    with MathJudge(config, size_hint=len(records)) as judge:
        return list(judge.judge(records, on_progress))
