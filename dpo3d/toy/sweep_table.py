"""The sweep table: every loss in every scenario, as Markdown (``sweep.md`` beside summary.json).

Columns: peak and final chosen probability π(i|i), final rejected x2, the largest
log(|∂L/∂x2| / |∂L/∂x1|) over training, and where the dispersed mass went (the class outside
the prompt's pairs that gained most, with the total mass the outside responses gained).
"""

from __future__ import annotations

from collections.abc import Sequence

from .indicators import ratio_cell


def _dispersal(row: dict) -> str:
    gained = row["outside_end"] - row["outside_start"]
    if row["dispersed_to"] is None:
        return f"none ({gained:+.2f})"
    return f"{row['dispersed_to']} ({gained:+.2f})"


HEADER = (
    "| scenario | loss | chosen peak (step) | chosen final | rejected final | max ln\\|g2/g1\\| | dispersed mass went to (outside Δ) |",
    "|---|---|---|---|---|---|---|",
)


def sweep_markdown(rows: Sequence[dict]) -> str:
    """One line per (scenario, loss) run, from ``indicators()`` rows."""
    lines = list(HEADER)
    for row in rows:
        stopped = f" stopped@{row['stopped_at']}" if row.get("stopped_at") is not None else ""
        lines.append(
            f"| {row['scenario']} | {row['loss_name']}{stopped} | {row['peak_chosen']:.2f} ({row['peak_step']}) "
            f"| {row['final_chosen']:.2f} | {row['final_rejected']:.1e} "
            f"| {ratio_cell(row)} | {_dispersal(row)} |"
        )
    return "\n".join(lines) + "\n"


def by_loss_markdown(rows: Sequence[dict], scenarios: Sequence[str]) -> str:
    """Compact: one line per loss, the four scenarios side by side as chosen final / peak and max ln|g2/g1|."""
    losses = list(dict.fromkeys(row["loss_name"] for row in rows))
    table = {(row["scenario"], row["loss_name"]): row for row in rows}
    header = "| loss | " + " | ".join(f"s{s}: chosen peak→final, rejected, ln\\|g2/g1\\|, went to" for s in scenarios) + " |"
    lines = [header, "|---|" + "---|" * len(scenarios)]
    short = {"unseen": "unseen", "other chosen": "oth-ch", "other rejected": "oth-rej", None: "none"}
    for loss in losses:
        cells = []
        for scenario in scenarios:
            row = table[(scenario, loss)]
            stopped = f" (stop@{row['stopped_at']})" if row.get("stopped_at") is not None else ""
            cells.append(
                f"{row['peak_chosen']:.2f}→{row['final_chosen']:.2f}, {row['final_rejected']:.0e}, "
                f"{ratio_cell(row)}, {short[row['dispersed_to']]}{stopped}"
            )
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
