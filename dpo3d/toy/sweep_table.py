"""The sweep tables: every loss in every scenario, as Markdown (``sweep.md`` beside summary.json).

``sweep_markdown``: peak and final chosen probability π(i|i), final rejected x2, the largest
log(|∂L/∂x2| / |∂L/∂x1|) over training, each prompt's mass at the end in four shares (own
chosen, rejected 5–8, other prompts' chosen, unseen 9–10; only the last is dispersion) and
the share that gained most after the chosen's peak.
``by_loss_markdown``: the same, one line per loss. ``mass_markdown``: where the mass went,
exactly: every class of response and the reference's argmax (mass.py). ``guard_markdown``:
chosen peak and final under each --guard, from one sweep per guard.
"""

from __future__ import annotations

from collections.abc import Sequence

from .indicators import ratio_cell
from .mass import MASS_CLASSES, SHORT

#: short names of the four shares (mass.SHARES) and of "no share gained"
SHARE_SHORT = {"own chosen": "own-ch", "rejected": "rej", "other chosen": "oth-ch", "unseen": "unseen", None: "none"}


def _shares_end(row: dict) -> str:
    """own chosen / rejected 5–8 / other chosen / unseen 9–10 at the end (the last one with 1 significant digit)."""
    end = row["shares_end"]
    return f"{end['own chosen']:.2f} / {end['rejected']:.0e} / {end['other chosen']:.2f} / {end['unseen']:.0e}"


HEADER = (
    "| scenario | loss | chosen peak (step) | chosen final | rejected final | max ln\\|g2/g1\\| "
    "| mass at the end: own-ch / rej 5–8 / oth-ch / unseen 9–10 | after the peak, gained most |",
    "|---|---|---|---|---|---|---|---|",
)


def _stops(row: dict) -> str:
    """Underflow stops (stopped@), the guard's stops (guard-stop@) and the step kept (kept@)."""
    marks = []
    for key, label in (("stopped_at", "stopped"), ("guard_stopped_at", "guard-stop"), ("kept_step", "kept")):
        if row.get(key) is not None:
            marks.append(f"{label}@{row[key]}")
    return "".join(f" {mark}" for mark in marks)


def sweep_markdown(rows: Sequence[dict]) -> str:
    """One line per (scenario, loss) run, from ``indicators()`` rows."""
    lines = list(HEADER)
    for row in rows:
        stopped = _stops(row)
        lines.append(
            f"| {row['scenario']} | {row['loss_name']}{stopped} | {row['peak_chosen']:.2f} ({row['peak_step']}) "
            f"| {row['final_chosen']:.2f} | {row['final_rejected']:.1e} "
            f"| {ratio_cell(row)} | {_shares_end(row)} | {SHARE_SHORT[row['after_peak_gain_to']]} |"
        )
    return "\n".join(lines) + "\n"


def by_loss_markdown(rows: Sequence[dict], scenarios: Sequence[str]) -> str:
    """Compact: one line per loss, the four scenarios side by side as chosen final / peak and max ln|g2/g1|."""
    losses = list(dict.fromkeys(row["loss_name"] for row in rows))
    table = {(row["scenario"], row["loss_name"]): row for row in rows}
    header = "| loss | " + " | ".join(f"s{s}: chosen peak→final, rejected, ln\\|g2/g1\\|, gained after peak" for s in scenarios) + " |"
    lines = [header, "|---|" + "---|" * len(scenarios)]
    for loss in losses:
        cells = []
        for scenario in scenarios:
            row = table[(scenario, loss)]
            stopped = f" ({_stops(row).strip()})" if _stops(row) else ""
            cells.append(
                f"{row['peak_chosen']:.2f}→{row['final_chosen']:.2f}, {row['final_rejected']:.0e}, "
                f"{ratio_cell(row)}, {SHARE_SHORT[row['after_peak_gain_to']]}{stopped}"
            )
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _argmax_classes(classes: Sequence[str]) -> str:
    """``["other chosen"] * 3 + ["own chosen"]`` -> ``oth-ch×3, own-ch×1``, most frequent first."""
    counts = {name: classes.count(name) for name in dict.fromkeys(classes)}
    return ", ".join(f"{SHORT[name]}×{n}" for name, n in sorted(counts.items(), key=lambda item: -item[1]))


def mass_markdown(rows: Sequence[dict]) -> str:
    """Where the mass went: per (scenario, loss), each class's change reference → final / chosen peak → final."""
    header = (
        "| scenario | loss | " + " | ".join(MASS_CLASSES) + " | reference argmax: class, Δ | final argmax |",
        "|---|---|" + "---|" * (len(MASS_CLASSES) + 2),
    )
    lines = list(header)
    for row in rows:
        total, late = row["mass_change"], row["mass_change_after_peak"]
        cells = [f"{total[name]:+.2f} / {late[name]:+.2f}" for name in (*MASS_CLASSES, "argmax")]
        cells[-1] = f"{_argmax_classes(row['reference_argmax_class'])}: {cells[-1]}"
        lines.append(
            f"| {row['scenario']} | {row['loss_name']} | " + " | ".join(cells) + f" | {_argmax_classes(row['final_argmax_class'])} |"
        )
    return "\n".join(lines) + "\n"


def guard_markdown(rows_by_guard: dict[str, Sequence[dict]], loss: str = "dpo") -> str:
    """Scenario × guard: chosen peak and final π(i|i) of ``loss`` (a stop's final is the state it kept)."""
    guards = list(rows_by_guard)
    lines = [
        "| scenario | " + " | ".join(f"{guard}: peak → final" for guard in guards) + " |",
        "|---|" + "---|" * len(guards),
    ]
    scenarios = list(dict.fromkeys(row["scenario"] for row in next(iter(rows_by_guard.values()))))
    for scenario in scenarios:
        cells = []
        for guard in guards:
            (row,) = [r for r in rows_by_guard[guard] if r["scenario"] == scenario and r["loss_name"] == loss]
            final = row["kept_chosen"] if row.get("guard") == "stop" else row["final_chosen"]
            acted = len(row["guard_actions"])
            note = f" ({acted} action{'s' if acted != 1 else ''})" if row.get("guard") else ""
            cells.append(f"{row['peak_chosen']:.2f} → {final:.2f}{note}")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
