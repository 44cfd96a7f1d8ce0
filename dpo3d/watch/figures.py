"""Figures of the 3D watch: event marks on any axis, and several runs side by side (mean ± sd per loss)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .detector import per_token_key, summed_key
from .diagnose import OTHER_P, Diagnosis

#: one colour and marker per property, shared by every figure that marks events
EVENT_STYLE = {
    "drastic_drop": ("tab:red", "v"),
    "likelihood_displacement": ("tab:olive", "x"),
    "degradation": ("tab:purple", "D"),
    "dispersion": ("tab:gray", "*"),
}


def mark_events(ax, events: Sequence[dict], records: Sequence[dict], key: str) -> None:
    """A marker where each event fired, on the curve of ``key`` (the value logged at that step)."""
    at = {r["step"]: r.get(key) for r in records}
    for event in events:
        value = at.get(event["step"])
        if value is None:
            continue
        color, marker = EVENT_STYLE.get(event["property"], ("black", "o"))
        ax.plot([event["step"]], [value], marker, color=color, ms=9, mfc="none", mew=2,
                label=event["property"].replace("_", " "), zorder=5)


def shown_on(events: Sequence[dict], key: str) -> list[dict]:
    """The events a panel of ``key`` shows: on the next-token split at the first differing token only the
    dispersion read there (token level); every event on the log-prob panels."""
    if key != OTHER_P:
        return list(events)
    return [e for e in events if e["property"] == "dispersion" and "first differing token" in e["message"]]


def series(records: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _dedupe_legend(fig, axes) -> None:
    """One legend below the panels (never over the lines), each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(len(seen), 6), fontsize=8)


PANELS = (
    (per_token_key("chosen"), "chosen: change since step 0 (nats/token)"),
    (per_token_key("rejected"), "rejected: change since step 0 (nats/token)"),
    (summed_key("chosen"), "chosen: change since step 0 (nats, summed)"),
    (OTHER_P, "p(other tokens) at the first differing token"),
)


def plot_runs(runs: Sequence[Diagnosis], target: str | Path) -> Path:
    """Per loss, the mean over its runs (line) ± sd (band) of four probes, and each run's events as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, list[Diagnosis]] = {}
    for run in runs:
        groups.setdefault(run.loss, []).append(run)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (loss, members), color in zip(groups.items(), colors, strict=False):
        for ax, (key, _) in zip(axes.flat, PANELS, strict=True):
            curves = [dict(zip(*series(m.records, key), strict=True)) for m in members]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            values = np.array([[c[s] for s in steps] for c in curves])
            mean = values.mean(0)
            ax.plot(steps, mean, color=color, label=f"{loss} (mean of {len(members)})")
            if len(members) > 1:
                sd = values.std(0, ddof=1)
                ax.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.2)
            for m in members:
                mark_events(ax, shown_on(m.events, key), m.records, key)
    for ax, (_, title) in zip(axes.flat, PANELS, strict=True):
        ax.set(title=title, xlabel="step")
        ax.axhline(0, color="black", lw=0.5)
        ax.grid(alpha=0.3)
    first = runs[0]
    lrs = sorted({r.lr for r in runs if r.lr})
    fig.suptitle(f"{first.model}: " + ", ".join(f"{loss} ×{len(m)}" for loss, m in groups.items())
                 + (f" · lr {', '.join(f'{lr:g}' for lr in lrs)}" if lrs else "") + " · bands ±1 sd over runs")
    _dedupe_legend(fig, axes.flat)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
