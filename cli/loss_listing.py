"""`--list-losses`: the registry as a reader needs it, one block per loss, on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from dpo3d.losses import LOSSES, UNAVAILABLE, format_defaults


def loss_lines() -> list[str]:
    """Plain lines (rich markup): name, log-probs, options with defaults, then the formula, the source and any note."""
    lines = [f"[bold]{len(LOSSES)} losses[/] (dpo3d/losses); set their options with --loss-arg KEY=VALUE (repeatable)", ""]
    for name in sorted(LOSSES):
        spec = LOSSES[name]
        reference = "" if spec.needs_reference else ", no reference"
        extras = f", needs {'+'.join(sorted(spec.inputs))} log-probs" if spec.inputs else ""
        lines.append(f"[bold cyan]{name}[/]  ({spec.log_probs} log-probs{reference}{extras})  options: {escape(format_defaults(spec.defaults))}")
        lines.append(f"    {escape(spec.summary)}")
        lines.append(f"    [dim]{escape(spec.source)}[/]")
        if spec.note:
            lines.append(f"    [yellow]note:[/] {escape(spec.note)}")
    lines.append("")
    for name, reason in UNAVAILABLE.items():
        lines.append(f"[bold yellow]{name}[/]  NOT IMPLEMENTED: {escape(reason)}")
    lines.append("")
    lines.append("Mixtures: --loss dpo:0.8,bco:0.2,sft:1.0 is Σ w_i·L_i per pair (TRL's loss_type list with loss_weights).")
    return lines


def print_losses(console: Console) -> None:
    for line in loss_lines():
        console.print(line, highlight=False, soft_wrap=False)
