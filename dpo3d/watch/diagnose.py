"""Re-read finished runs: the detector over each run's metrics.jsonl, a row of what happened, and a table.

``diagnose(run)`` needs only the run folder (metrics.jsonl, and run_config.json for the model, loss, β
and lr when it is there), so a run trained before a change of the detector, or with other thresholds,
can be read again without training. ``table`` lays rows out as Markdown, one per run and one per loss
(mean ± sd over the runs that share it, e.g. seeds).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dpo3d.data.run_log import read_log

from ..losses import LOSSES
from .detector import OTHER_P, DetectorSettings, ThreeDDetector, per_token_key, summed_key
from .divergence import PREFIX

CHOSEN_P = f"{PREFIX}chosen_p"


@dataclass
class Diagnosis:
    """One run read again: its identity, the detector's events and the numbers a reader asks for first."""

    run: Path
    model: str = "?"
    loss: str = "?"
    hyperparameters: dict = field(default_factory=dict)
    lr: float | None = None
    seed: int | None = None
    events: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    row: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        beta = ", ".join(f"{k} {v:g}" for k, v in self.hyperparameters.items() if isinstance(v, (int, float)))
        return (f"{self.model} · {self.loss}" + (f" ({beta})" if beta else "") + (f" · lr {self.lr:g}" if self.lr else "")
                + (f" · seed {self.seed}" if self.seed is not None else ""))


def _probe_records(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if isinstance(r.get(summed_key("chosen")), (int, float))]


def summarise(records: Sequence[dict]) -> dict:
    """Peak of the chosen (summed) and where it ended, per token and summed; the rejected's end; the
    token-level split at the first differing token from start to end. Empty without probe records."""
    probes = _probe_records(records)
    if not probes:
        return {}
    peak = max(probes, key=lambda r: r[summed_key("chosen")])
    first, last = probes[0], probes[-1]
    row = {
        "peak_step": peak["step"],
        "chosen_peak": peak[summed_key("chosen")],
        "chosen_final": last[summed_key("chosen")],
        "chosen_peak_per_token": peak.get(per_token_key("chosen")),
        "chosen_final_per_token": last.get(per_token_key("chosen")),
        "rejected_final": last[summed_key("rejected")],
        "rejected_final_per_token": last.get(per_token_key("rejected")),
    }
    for key, name in ((OTHER_P, "other_p"), (CHOSEN_P, "chosen_p")):
        if key in first and key in last:
            row[f"{name}_start"], row[f"{name}_final"] = first[key], last[key]
    return row


def diagnose(run: str | Path, settings: DetectorSettings | None = None) -> Diagnosis:
    run = Path(run)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise ValueError(f"{run}: no metrics.jsonl (is it a train-dpo run folder?)")
    records = read_log(metrics)
    if not _probe_records(records):
        raise ValueError(f"{metrics}: no probe records (probe_chosen_logp_delta); the detector has nothing to read")
    found = Diagnosis(run, records=records)
    config_path = run / "run_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        extra = config.get("extra", {})
        found.model = Path(str(extra.get("model", "?"))).name or "?"
        found.loss = str(extra.get("loss", "?"))
        found.hyperparameters = dict(extra.get("hyperparameters") or {})
        if found.loss in LOSSES:  # the values the run trained with: the loss's defaults where none was given
            found.hyperparameters = {**LOSSES[found.loss].defaults, **found.hyperparameters}
        found.lr, found.seed = config.get("lr"), config.get("seed")
    found.events = ThreeDDetector(settings or DetectorSettings()).read_all(records)
    found.row = summarise(records)
    return found


def _cell(values: Sequence[float | None], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sign = "+" if digits else ""  # changes carry a sign, steps do not
    if len(values) == 1:
        return f"{values[0]:{sign}.{digits}f}"
    return f"{statistics.mean(values):{sign}.{digits}f} ± {statistics.stdev(values):.{digits}f}"


COLUMNS = (  # (header, row keys, digits, joiner)
    ("peak step", ("peak_step",), 0, ""),
    ("chosen Δ summed: peak → final (nats)", ("chosen_peak", "chosen_final"), 2, " → "),
    ("chosen Δ per token: peak → final", ("chosen_peak_per_token", "chosen_final_per_token"), 4, " → "),
    ("rejected Δ final: summed / per token", ("rejected_final", "rejected_final_per_token"), 3, " / "),
    ("p(other tokens) at the first differing token: start → final", ("other_p_start", "other_p_final"), 3, " → "),
    ("p(chosen's token) there: start → final", ("chosen_p_start", "chosen_p_final"), 3, " → "),
)


def _events_cell(runs: Sequence[Diagnosis]) -> str:
    counts: dict[str, list[int]] = {}
    for run in runs:
        for event in run.events:
            counts.setdefault(event["property"], []).append(event["step"])
    if not counts:
        return "none"
    return "; ".join(f"{name.replace('_', ' ')} ×{len(steps)} (first at step {min(steps)})" for name, steps in counts.items())


def table(runs: Sequence[Diagnosis]) -> str:
    """Markdown: one row per loss (mean ± sd over its runs; the number of runs in the first column), then one
    row per run."""
    header = "| run | runs | " + " | ".join(column[0] for column in COLUMNS) + " | detector events |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    groups: dict[str, list[Diagnosis]] = {}
    for run in runs:
        groups.setdefault(run.loss, []).append(run)
    rows = [(f"**{loss}**", members) for loss, members in groups.items()]
    if any(len(members) > 1 for _, members in rows):
        rows += [(run.run.name, [run]) for run in runs]
    for name, members in rows:
        cells = []
        for _, keys, digits, joiner in COLUMNS:
            cells.append(joiner.join(_cell([m.row.get(k) for m in members], digits) for k in keys))
        lines.append(f"| {name} | {len(members)} | " + " | ".join(cells) + f" | {_events_cell(members)} |")
    return "\n".join(lines) + "\n"
