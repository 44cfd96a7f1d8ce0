"""A sampling run that survives a crash: ``sample --out FILE --resume``.

The output file is an append log: each chunk's candidates are appended (and flushed)
as soon as the chunk is sampled, so the file is always a prefix of what the
uninterrupted run writes. Resuming reads it back (a line torn by the crash is
dropped), checks that it is a prefix of *this* run (same prompt ids in the same
order, same ``-n``, same prompts and source), keeps the whole chunks, rewrites the
file atomically with just those (a half-written chunk goes, so none of its
candidates can appear twice) and samples the chunks that remain. Chunk ``c`` is
seeded from ``(seed, c)`` (see :mod:`dpo3d.generation.sampler`), so the resumed file is the
file an uninterrupted run writes, line for line.

The settings that change the candidates without showing in them (seed, temperature,
batch size, model, ...) are kept beside the file in ``FILE.run.json``; a resume
with other settings is refused rather than mixing two runs in one file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from dpo3d.data import records as rec
from dpo3d.data.run_log import AppendLog, read_log
from dpo3d.data.schema import is_text
from dpo3d.generation.sampler import ChunkResult, SamplingConfig, chunks, sample_all
from dpo3d.models.loading import dtype_name


class RunMismatch(ValueError):
    """``--resume`` was pointed at a file another run wrote."""


# --------------------------------------------------------------------------- prompts


def content_id(prompt) -> str:
    """A stable id for a prompt record that has none: a hash of its prompt."""
    canonical = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "p-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def prepare_prompts(records: Iterable[dict]) -> list[dict]:
    """Prompt records ready to sample: each with a text ``prompt`` and a unique string ``id``.

    A record without an ``id`` gets :func:`content_id`. Ids must be unique: a prompt's
    candidates are found by it when resuming and grouped by it downstream.
    """
    out: list[dict] = []
    first_seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        if not is_text(record.get("prompt")):
            raise ValueError(f"prompt record {number}: 'prompt' should be a string or a list of chat messages")
        raw_id = record.get("id")
        if raw_id is None:
            record = {"id": content_id(record["prompt"]), **record}
        elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise ValueError(f"prompt record {number}: 'id' should be a string")
        else:
            record = {**record, "id": str(raw_id)}
        if record["id"] in first_seen:
            raise ValueError(
                f"prompt record {number}: duplicate id '{record['id']}' (first in record {first_seen[record['id']]}); "
                "ids must be unique"
            )
        first_seen[record["id"]] = number
        out.append(record)
    return out


# --------------------------------------------------------------------------- the output file


def settings_path(path: str | Path) -> Path:
    """Where a run's settings are kept beside its output file."""
    path = Path(path)
    return path.with_name(path.name + ".run.json")


def check_output(path: str | Path, resume: bool) -> None:
    """Refuse an output file that is there without ``resume`` (before any work is done)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; --out takes a file")
    if path.exists() and not resume:
        raise ValueError(f"{path} exists: pass --resume to continue the run that wrote it, or remove it")


def _same(key: str, saved, value) -> bool:
    """Whether a setting is unchanged; a dtype as older runs recorded it ("torch.float32") equals its name now."""
    return dtype_name(saved) == dtype_name(value) if key == "dtype" else saved == value


def check_settings(path: str | Path, settings: dict) -> None:
    """Refuse to resume a file written with other settings (when its settings file is there)."""
    saved_path = settings_path(path)
    if not saved_path.is_file():
        return  # a file from elsewhere: only its records can be checked
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunMismatch(f"{saved_path}: unreadable run settings ({err}); remove it to resume without the check") from None
    changed = [f"{key} {saved[key]!r} -> {value!r}" for key, value in settings.items()
               if key in saved and not _same(key, saved[key], value)]
    if changed:
        raise RunMismatch(
            f"{path} was sampled with other settings ({'; '.join(changed)}): "
            "resume with the same ones, or remove it to start again"
        )


@dataclass
class ResumePlan:
    kept: list[dict]  # candidates of the complete chunks on disk, in run order
    done_chunks: set[int]
    dropped: int  # candidates of a half-written chunk: sampled again


def plan_resume(path: str | Path, prompts: Sequence[dict], config: SamplingConfig, source: str) -> ResumePlan:
    """What to keep of an interrupted run's file, after checking it is a prefix of this run."""
    on_disk = read_log(path)
    expected: list[tuple[dict, int, int]] = [  # (prompt record, sample_index, chunk index)
        (prompt, index, chunk_index)
        for chunk_index, chunk in chunks(prompts, config)
        for prompt in chunk
        for index in range(config.n)
    ]
    if len(on_disk) > len(expected):
        raise RunMismatch(
            f"{path} holds {len(on_disk)} candidates, more than this run samples ({len(expected)}): "
            "another run wrote it; remove it or choose another --out"
        )
    for number, (record, (prompt, index, _)) in enumerate(zip(on_disk, expected[: len(on_disk)], strict=True), start=1):
        found = (record.get("id"), record.get("sample_index"))
        if found != (prompt["id"], index):
            raise RunMismatch(
                f"{path}: candidate {number} is id {found[0]!r} sample {found[1]!r}, where this run has "
                f"id {prompt['id']!r} sample {index} (other prompts, order or -n?): "
                "another run wrote it; remove it or choose another --out"
            )
        if record.get("prompt") != prompt["prompt"]:
            raise RunMismatch(f"{path}: candidate {number} (id {prompt['id']!r}) has another prompt text (another --template?)")
        if record.get("source") != source:
            raise RunMismatch(f"{path}: candidate {number} has source {record.get('source')!r}, this run {source!r}")
    # keep the chunks whose candidates are all there: those before the first incomplete one
    complete = len(on_disk)
    if complete < len(expected):
        unfinished = expected[complete][2]
        complete = next(i for i, item in enumerate(expected) if item[2] == unfinished)
    done = {item[2] for item in expected[:complete]}
    return ResumePlan(kept=on_disk[:complete], done_chunks=done, dropped=len(on_disk) - complete)


# --------------------------------------------------------------------------- running


@dataclass
class RunSummary:
    prompts: int
    skipped_prompts: int  # already complete in the output file
    candidates: int  # written by this run
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def _run(
    sampler, prompts: list[dict], source: str, skip: set[int], write: Callable[[dict], None],
    on_start: Callable[[int, int], None] | None, on_chunk: Callable[[ChunkResult], None] | None,
) -> RunSummary:
    skipped = sum(len(chunk) for index, chunk in chunks(prompts, sampler.config) if index in skip)
    if on_start is not None:
        on_start(len(prompts), skipped)
    summary = RunSummary(len(prompts), skipped, 0, 0, 0.0)
    start = time.perf_counter()
    for result in sample_all(sampler, prompts, source, skip_chunks=skip):
        for record in result.records:
            write(record)
        summary.candidates += len(result.records)
        summary.new_tokens += result.new_tokens
        # called once the chunk is written: a callback that raises leaves whole chunks behind
        if on_chunk is not None:
            on_chunk(result)
    summary.seconds = time.perf_counter() - start
    return summary


def sample_to_file(
    sampler,
    prompts: Iterable[dict],
    source: str,
    path: str | Path,
    *,
    resume: bool = False,
    settings: dict | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> RunSummary:
    """Sample every prompt's candidates into ``path``, chunk by chunk; with ``resume``, continue
    the interrupted run that wrote ``path``.

    ``settings`` are what else shaped the candidates (model, backend, dtype); they are saved
    with the sampling config in ``FILE.run.json`` and must match to resume.
    ``on_start(total_prompts, skipped_prompts)`` is called once, ``on_chunk`` after each chunk.
    """
    path = Path(path)
    prompts = prepare_prompts(prompts)
    check_output(path, resume)
    run_settings = {**asdict(sampler.config), "source": source, **(settings or {})}
    skip: set[int] = set()
    if path.exists():
        check_settings(path, run_settings)
        plan = plan_resume(path, prompts, sampler.config, source)
        rec.write_records(plan.kept, path)  # atomic: the half-written chunk goes
        skip = plan.done_chunks
    rec.write_json(run_settings, settings_path(path))
    with AppendLog(path) as log:
        return _run(sampler, prompts, source, skip, log.write, on_start, on_chunk)


def sample_to_stream(
    sampler,
    prompts: Iterable[dict],
    source: str,
    stream: TextIO,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> RunSummary:
    """Sample every prompt's candidates as JSONL lines into ``stream`` (flushed chunk by chunk,
    so the next stage of a pipeline starts reading early)."""

    def write(record: dict) -> None:
        stream.write(rec.dumps(record) + "\n")

    def flushed(result: ChunkResult) -> None:
        stream.flush()
        if on_chunk is not None:
            on_chunk(result)

    return _run(sampler, prepare_prompts(prompts), source, set(), write, on_start, flushed)
