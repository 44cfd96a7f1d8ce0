"""The 3D probes over a finished run's saved checkpoints, from any trainer: the record train-dpo writes live.

A run folder of TRL's (or any 🤗 ``Trainer``'s) ``checkpoint-N`` sub-folders, or any model folders or PEFT
adapters named with their step, is scored checkpoint by checkpoint with the probe scorer train-dpo and the
TRL callback use (:mod:`dpo3d.watch.probes`). Step 0 is the starting model (``base``; for adapters, the base
model they were trained on, which a fresh LoRA adapter equals exactly). The records go to
``OUT/metrics.jsonl``, the detector's events to ``OUT/summary.json``: :func:`dpo3d.watch.diagnose.diagnose`
then reads ``OUT`` like a train-dpo run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from dpo3d.data.records import write_json
from dpo3d.data.run_log import AppendLog
from dpo3d.models.loading import LoadOptions, adapter_base, load_causal_lm, load_tokenizer

from .detector import DetectorSettings, ThreeDDetector
from .probe_responses import generate
from .probes import ProbeOptions, ProbeScorer, probe_sets, select

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # 🤗 Trainer / TRL: <output_dir>/checkpoint-<global_step>


def find_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """``run``'s ``checkpoint-N`` sub-folders as (N, folder), by step."""
    found = [(int(m.group(1)), path) for path in Path(run).iterdir()
             if path.is_dir() and (m := CHECKPOINT.match(path.name)) and int(m.group(1)) > 0]  # step 0 is the base
    return sorted(found)


def starting_model(checkpoints: Iterable[tuple[int, Path]], base: str | None) -> str:
    """The step-0 model: ``base``, else the base model the (adapter) checkpoints name."""
    if base is not None:
        return base
    bases = {adapter_base(str(folder)) for _, folder in checkpoints}
    if len(bases) == 1 and None not in bases:
        return bases.pop()
    raise ValueError("the checkpoints are full models: name the model training started from with --base "
                     "(step 0, the baseline every change is taken from)")


def score_checkpoints(
    checkpoints: list[tuple[int, Path]], pairs, out: Path, base: str | None = None,
    options: ProbeOptions = ProbeOptions(), detector: DetectorSettings | None = None,
    load: LoadOptions = LoadOptions(), on_step: Callable[[int], None] = lambda step: None,
) -> list[dict]:
    """Score the starting model (step 0) and every checkpoint on the probe pairs; write ``out/metrics.jsonl``
    and ``out/summary.json`` (the detector's events); return the records."""
    if not checkpoints:
        raise ValueError("no checkpoints to score")
    start = starting_model(checkpoints, base)
    tokenizer = load_tokenizer(start, load)
    data, indices, prompts = select(pairs, tokenizer, options)
    model = load_causal_lm(start, load)
    # as the TRL callback: the starting model's own greedy response
    responses = generate(model, tokenizer, prompts, options.greedy, options.seed) if options.greedy else {}
    scorer = ProbeScorer(probe_sets(data.chosen, data.rejected, indices, data.unseen, responses),
                         tokenizer.pad_token_id, options.batch_size, tokenizer.padding_side or "right")
    watch = ThreeDDetector(detector or DetectorSettings())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    records = []
    with AppendLog(out / "metrics.jsonl") as log:
        for step, spec in [(0, start), *((step, str(folder)) for step, folder in checkpoints)]:
            on_step(step)
            if step:
                del model
                model = load_causal_lm(spec, load)
            record = {"step": step, **scorer.measure(model, step)}
            watch.update(record)
            log.write(record)
            records.append(record)
    write_json({"three_d_events": watch.events, "start": start,
                "checkpoints": {str(step): str(folder) for step, folder in checkpoints}}, out / "summary.json")
    return records
