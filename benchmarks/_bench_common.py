"""Pieces the benchmarks share: workers in their own processes, memory readings, FLOP accounting, tables.

Memory (Linux /proc): a process's peak resident set (``VmHWM``, the same as ``ru_maxrss``) only grows,
so each measured configuration runs in a fresh process. Writing ``5`` to ``/proc/self/clear_refs``
resets that peak, which lets a worker report the peak of its training steps alone (model loading and
the reference pass excluded) beside the peak of the whole process (read just before the reset).

FLOPs of a training step (policy forward + backward), per step:

    6 · N_body · T  +  6 · V·d · P

``T`` the real (non-padding) tokens of the step's chosen and rejected sequences, ``P`` the positions
whose next-token log-prob the loss needs (the response tokens), ``N_body`` the parameters that do a
matmul per token (all but the input embedding, which is a lookup, and the LM head), ``V·d`` the LM
head. The head's FLOPs at prompt positions are not needed for DPO, so no trainer is credited for
them (dpo3d skips them; a trainer that computes them spends time it gets no credit for). Attention's
own T²-terms are left out (~4% at 300 tokens): the MFU is a slight underestimate for every trainer
alike. ``6 · N · T`` (N all parameters, tied embeddings once), the convention the issue's figures
used, is reported beside it. A reference forward inside the step costs a third of this (2·…).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data" / "examples" / "pairs.jsonl"
RESULT_MARK = "BENCH_RESULT "  # workers' JSON line on stdout; libraries may print other lines there


# ---------------------------------------------------------------- memory readings


def _status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib() -> float:
    """Resident set size now."""
    return _status_mib("VmRSS")


def hwm_mib() -> float:
    """Peak resident set size since the process started or the last :func:`reset_peak`."""
    return _status_mib("VmHWM")


def data_mib() -> float:
    """Private writable memory now (``VmData``): what ``RLIMIT_DATA`` limits."""
    return _status_mib("VmData")


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakTracker:
    """Peak memory of the whole process and of one phase of it (``start`` ... ``stop``)."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.readings: dict[str, float | bool | None] = {}

    def start(self) -> None:
        self.readings["rss_at_start_mib"] = rss_mib()
        self.readings["peak_before_mib"] = hwm_mib()
        self.readings["phase_peak_measured"] = reset_peak()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.readings["cuda_peak_before_mib"] = torch.cuda.max_memory_allocated() / 2**20
            self.readings["cuda_at_start_mib"] = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> dict:
        r = self.readings
        phase = hwm_mib()
        r["phase_peak_mib"] = phase if r["phase_peak_measured"] else None
        r["process_peak_mib"] = max(r["peak_before_mib"], phase)
        r["phase_growth_mib"] = phase - r["rss_at_start_mib"] if r["phase_peak_measured"] else None
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            r["cuda_phase_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            r["cuda_process_peak_mib"] = max(r["cuda_peak_before_mib"], r["cuda_phase_peak_mib"])
        return dict(r)


def kernel_reading() -> tuple[float, int]:
    """(kernel CPU seconds, minor page faults) of this process so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_stime, usage.ru_minflt


def kernel_per_step(readings: list[tuple[float, int]]) -> dict:
    """Kernel seconds and page faults between consecutive readings (one before and one after each step)."""
    timed = list(zip(readings, readings[1:], strict=False))
    return {"kernel_seconds": [b[0] - a[0] for a, b in timed], "page_faults": [b[1] - a[1] for a, b in timed]}


# ---------------------------------------------------------------- compute


def matmul_peak(device: str = "cpu", dtype_name: str = "fp32", size: int | None = None, repeats: int = 10) -> float:
    """Measured matmul throughput in FLOP/s on ``device`` in ``dtype`` (the MFU denominator)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    size = size or (2048 if device == "cpu" else 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


@dataclass
class ModelShape:
    params: int  # unique parameters (tied embeddings once)
    embedding: int  # the input embedding matrix
    head: int  # the LM head matrix (the embedding again when tied)
    tied: bool

    @property
    def body(self) -> int:
        """Parameters that do a matmul per token, the LM head excluded."""
        return self.params - self.embedding - (0 if self.tied else self.head)

    @classmethod
    def of(cls, model) -> ModelShape:
        unique = {p.data_ptr(): p.numel() for p in model.parameters()}
        embedding = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        return cls(sum(unique.values()), embedding.numel(), head.numel(), embedding.data_ptr() == head.data_ptr())

    def train_flops(self, tokens: float, predicted: float) -> float:
        """Policy forward + backward of one step (module docstring)."""
        return 6 * self.body * tokens + 6 * self.head * predicted

    def forward_flops(self, tokens: float, predicted: float) -> float:
        return 2 * self.body * tokens + 2 * self.head * predicted

    def convention_flops(self, tokens: float) -> float:
        return 6 * self.params * tokens

    def to_json(self) -> dict:
        return {**asdict(self), "body": self.body}


# ---------------------------------------------------------------- data


def load_rows(n: int | None = None, path: Path = PAIRS) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if n is not None:
        if len(rows) < n:
            raise SystemExit(f"{path} has only {len(rows)} pairs, fewer than the {n} asked for")
        rows = rows[:n]
    return rows


def optional_logprob_options():
    """dpo3d.scoring.forward.LogprobOptions and whether DPORunConfig takes it; (None, False) on a library without it."""
    try:
        from dpo3d.scoring.forward import LogprobOptions
    except ImportError:
        return None, False
    from dataclasses import fields

    from dpo3d.training.dpo import DPORunConfig

    return LogprobOptions, "logprobs" in {f.name for f in fields(DPORunConfig)}


def quiet_probe_responses() -> dict:
    """DPORunConfig keywords that switch off the squeezing probes' generation (not part of any step)."""
    try:
        from dpo3d.watch.probe_responses import ProbeResponseConfig
    except ImportError:
        return {}
    return {"probe_responses": ProbeResponseConfig(greedy=False, samples=0)}


class StepsDone(Exception):  # noqa: N818 - a signal, not an error
    """Raised from the loop's last on_step: the steps are measured, the final save is not part of them."""


# ---------------------------------------------------------------- processes


def worker_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}


def emit(result: dict) -> None:
    """A worker's answer: one marked JSON line on stdout."""
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_worker(argv: list[str], threads: int, timeout: float | None = None, preexec=None) -> dict:
    """Run ``python argv...`` in a fresh process; its marked JSON line, or {"error": ...}."""
    began = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                              env=worker_env(threads), preexec_fn=preexec)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_seconds": time.perf_counter() - began}
    wall = time.perf_counter() - began
    answers = [line[len(RESULT_MARK):] for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if answers:
        return {**json.loads(answers[-1]), "wall_seconds": wall, "returncode": done.returncode}
    how = f"exit {done.returncode}" if done.returncode >= 0 else f"killed by signal {-done.returncode}"
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
    return {"error": f"worker {how}: " + " | ".join(tail)[-600:], "wall_seconds": wall, "returncode": done.returncode,
            "stderr_tail": done.stderr[-4000:]}


# ---------------------------------------------------------------- output


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def fmt(value, spec: str = ".1f", missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return format(value, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("✓" if ok else "✗")


def write_json(path: str | Path | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)


def timed_sampling(model, tokenizer, prompts: list[dict], config) -> tuple[list[str], int, float]:
    """Sample every prompt with dpo3d's HF sampler: (the candidates' texts, new tokens, seconds)."""
    from dpo3d.generation.sampler import HFSampler, sample_all

    sampler = HFSampler(model, tokenizer, config)
    texts, tokens = [], 0
    began = time.perf_counter()
    for result in sample_all(sampler, prompts, "bench"):
        texts += [record["completion"] for record in result.records]
        tokens += result.new_tokens
    return texts, tokens, time.perf_counter() - began
