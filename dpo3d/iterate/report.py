"""An iterate run read back: a row per round, the whole run as one probe trajectory, its detector
events, its figure and its Markdown.

Every round probes the same pairs (round 1's probe set), so the probe log-probs of all rounds
form one trajectory. Each round's own run folder takes its changes from that round's start; here
they are taken from round 1's start (the run's), and the detector reads the joined records with
the noise floor round 1 measured. The squeezing probes (the starting policy's own responses) are
regenerated each round, so they are left out of the joined trajectory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dpo3d.data import inputs
from dpo3d.data import records as rec
from dpo3d.data.run_log import read_log
from dpo3d.judges.intervals import interval_text, wilson_json
from dpo3d.watch.detector import (
    NOISE_PER_TOKEN,
    NOISE_SUMMED,
    DetectorSettings,
    ThreeDDetector,
    per_token_key,
    summed_key,
)

from .config import IterateConfig, Layout

#: the probe groups that are the same sequences in every round
SHARED_GROUPS = ("chosen", "rejected", "unseen")


def _probe_records(layout: Layout, number: int) -> list[dict]:
    return [r for r in read_log(layout.run(number) / "metrics.jsonl") if isinstance(r.get("probe_chosen_logp"), float)]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def round_row(layout: Layout, number: int) -> dict:
    """One round: its samples' mean score (for a right/wrong judge: their accuracy and its 95% Wilson
    interval), the pairs it built,
    its steps, the probe changes within the round (summed and per token) and its detector events."""
    judged = list(inputs.stream(inputs.open_source(layout.judged(number))))
    pairs = sum(1 for _ in inputs.stream(inputs.open_source(layout.pairs(number))))
    probes = _probe_records(layout, number)
    first, last = probes[0], probes[-1]
    summary = json.loads((layout.run(number) / "summary.json").read_text(encoding="utf-8"))
    scores = [r["score"] for r in judged]
    row = {"round": number, "candidates": len(judged), "sample_score": _mean(scores), "pairs": pairs, "steps": last["step"]}
    if scores and all(score in (0.0, 1.0) for score in scores):  # a right/wrong judge: an accuracy, with its interval
        right = int(sum(scores))
        row.update(sample_right=right, sample_interval=wilson_json(right, len(scores)))
    for side in ("chosen", "rejected"):
        row[f"{side}_start"], row[f"{side}_end"] = first[f"probe_{side}_logp"], last[f"probe_{side}_logp"]
        row[f"{side}_delta"] = last[summed_key(side)]
        row[f"{side}_delta_per_token"] = last.get(per_token_key(side))
    row["events"] = [{"property": e["property"], "step": e["step"]} for e in summary.get("three_d_events", [])]
    return row


def joined_records(layout: Layout, rounds: int) -> list[dict]:
    """Every round's probe records on one step axis, their changes taken from round 1's step 0."""
    joined: list[dict] = []
    base: dict | None = None
    offset = 0
    for number in range(1, rounds + 1):
        records = _probe_records(layout, number)
        if base is None:
            base = records[0]
        for record in records:
            if number > 1 and record["step"] == 0:
                continue  # the previous round's last state, scored again at this round's start
            point = {"step": offset + record["step"], "round": number}
            for group in SHARED_GROUPS:
                for value, change in ((f"probe_{group}_logp", summed_key(group)),
                                      (f"probe_{group}_logp_per_token", per_token_key(group))):
                    if isinstance(record.get(value), float) and isinstance(base.get(value), float):
                        point[value] = record[value]
                        point[change] = record[value] - base[value]
            if not joined:
                point.update({key: base[key] for key in (NOISE_SUMMED, NOISE_PER_TOKEN) if key in base})
            joined.append(point)
        offset += records[-1]["step"]
    return joined


def whole_run(config: IterateConfig, layout: Layout, rows: list[dict], costs: dict[str, dict]) -> dict:
    """The run's report: rows, the joined trajectory's events, costs; written to iterate.json, iterate.md
    and probes.png in the run folder."""
    joined = joined_records(layout, len(rows))
    events = ThreeDDetector(DetectorSettings()).read_all(joined)
    report = {"config": config.to_json(), "rounds": rows, "events": events, "trajectory": joined, "costs": costs}
    rec.write_json(report, layout.root / "iterate.json")
    figure = plot_trajectory(joined, events, layout.root / "probes.png")
    (layout.root / "iterate.md").write_text(markdown(config, rows, events, costs, figure.name), encoding="utf-8")
    return report


def sample_text(row: dict) -> str:
    """A round's samples: their accuracy with its 95% interval for a right/wrong judge, else their mean score."""
    if row.get("sample_interval") is not None:
        return f"{interval_text(row['sample_score'], row['sample_interval'])} ({row['sample_right']}/{row['candidates']})"
    return _f(row["sample_score"], 3)


def _f(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(config: IterateConfig, rows: Sequence[dict], events: Sequence[dict], costs: dict[str, dict],
             figure: str) -> str:
    loop = config.train.loop
    lines = [f"# dpo3d iterate: {config.model}", "",
             f"{config.rounds} rounds; each samples {config.n} candidates per prompt (temperature {config.temperature:g}) "
             f"from its policy, judges them with `--reward {config.reward}`, pairs each prompt's best against its worst and trains "
             f"`{config.train.loss.name}` for {loop.max_steps} steps ({loop.batch_size}×{loop.grad_accum} pairs, lr "
             f"{loop.lr:g}, seed {loop.seed}); reference: {config.reference}. Probe changes are summed log-probs "
             "(nats), mean over the probe pairs; per token in brackets.", "",
             "| round | candidates | sample score (right/wrong: accuracy [95%]) | pairs | steps | chosen Δ in round | rejected Δ in round | "
             "chosen since start | rejected since start | events |", "|---|---|---|---|---|---|---|---|---|---|"]
    start = rows[0] if rows else {}
    for row in rows:
        shown = "; ".join(f"{e['property']} @ {e['step']}" for e in row["events"]) or "none"
        lines.append(
            f"| {row['round']} | {row['candidates']} | {sample_text(row)} | {row['pairs']} | {row['steps']} | "
            f"{_f(row['chosen_delta'])} ({_f(row['chosen_delta_per_token'], 3)}) | "
            f"{_f(row['rejected_delta'])} ({_f(row['rejected_delta_per_token'], 3)}) | "
            f"{_f(row['chosen_end'] - start['chosen_start'])} | {_f(row['rejected_end'] - start['rejected_start'])} | {shown} |")
    lines += ["", "## The whole run, read by the detector", ""]
    lines += [f"- {e['property']} at step {e['step']}: {e['message']}" for e in events] or ["- none"]
    lines += ["", f"![probe changes since the start]({figure})", "", "## Cost", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {_f(cost.get('seconds'), 1)} |" for name, cost in costs.items() if cost]
    return "\n".join(lines) + "\n"


def plot_trajectory(joined: Sequence[dict], events: Sequence[dict], target: Path) -> Path:
    """Chosen, rejected and unseen probe changes since the run's start, summed and per token; the rounds
    shaded apart and each detector event marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    steps = [r["step"] for r in joined]
    colours = {"chosen": "tab:green", "rejected": "tab:red", "unseen": "tab:gray"}
    for ax, key, title in ((axes[0], summed_key, "summed (nats)"), (axes[1], per_token_key, "per token (nats)")):
        for group, colour in colours.items():
            values = [r.get(key(group)) for r in joined]
            if any(v is not None for v in values):
                ax.plot(steps, values, color=colour, label=group, marker=".")
        rounds = sorted({r["round"] for r in joined})
        for number in rounds[1:]:
            first = next(r["step"] for r in joined if r["round"] == number)
            ax.axvline(first - 0.5, color="black", linestyle=":", linewidth=0.8)
        for event in events:
            ax.axvline(event["step"], color="tab:orange", alpha=0.4, linewidth=2)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("step (all rounds; dotted: a new round)")
        ax.set_title(f"probe log-prob change since the start, {title}")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
