"""The 3D indicators of a toy run: the numbers that say whether DPO dropped, degraded, dispersed.

Curves are means over prompts (probabilities of a response class) or over pairs
(x1, x2, gradients, margins), one value per step, for every run at once. Each
prompt's mass is split into four shares (mass.py: own chosen, rejected 5–8, the other
prompts' chosen, unseen 9–10); only mass gained by the unseen 9–10 is called dispersion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .mass import MASS_CLASSES, SHARES, mass_moves, mass_shares
from .scenarios import CHOSEN, N_PROMPTS, UNSEEN
from .train import ToyResult

#: chosen "starts to fall" when it ends more than this fraction below its peak
FALL_TOLERANCE = 0.01
#: the margin "stops" when it moves less than this over the last tenth of the steps (see margin_drift)
DRIFT_WINDOW = 0.1


@dataclass
class Curves:
    """Per run, per step: shape (runs, steps+1) each, except ``shares`` (runs, steps+1, 4)."""

    chosen: torch.Tensor  # π(i|i), mean over prompts
    rejected: torch.Tensor  # x2, mean over pairs
    unseen: torch.Tensor  # π(9|x) + π(10|x), mean over prompts: the only mass that is dispersion
    shares: torch.Tensor  # mass_shares (own chosen, rejected 5-8, other prompts' chosen, unseen), mean over prompts
    chosen_logp: torch.Tensor  # log x1, mean over pairs
    rejected_logp: torch.Tensor  # log x2, mean over pairs
    log_grad_chosen: torch.Tensor  # log|∂L/∂x1|, mean over pairs (analytic)
    log_grad_rejected: torch.Tensor
    log_grad_ratio: torch.Tensor  # log(|∂L/∂x2| / |∂L/∂x1|), largest over pairs (nan where both are 0)
    margin: torch.Tensor  # (logp_w - ref_w) - (logp_l - ref_l), mean over pairs
    loss: torch.Tensor

    @property
    def other_chosen(self) -> torch.Tensor:
        """Mass on the other prompts' chosen responses (in the data: not dispersion), mean over prompts."""
        return self.shares[..., SHARES.index("other chosen")]

    @property
    def rejected_mass(self) -> torch.Tensor:
        """Mass on all four rejected responses 5-8, mean over prompts."""
        return self.shares[..., SHARES.index("rejected")]


def curves(result: ToyResult) -> Curves:
    history = result.history
    probs = history.probs  # (R, T, P, V)
    diagonal = torch.tensor(CHOSEN)
    ratio = history.log_abs_grad_rejected - history.log_abs_grad_chosen
    return Curves(
        chosen=probs[:, :, torch.arange(N_PROMPTS), diagonal].mean(-1),
        rejected=history.rejected_logps.exp().mean(-1),
        unseen=probs[..., list(UNSEEN)].sum(-1).mean(-1),
        shares=mass_shares(probs).mean(-2),
        chosen_logp=history.chosen_logps.mean(-1),
        rejected_logp=history.rejected_logps.mean(-1),
        log_grad_chosen=history.log_abs_grad_chosen.mean(-1),
        log_grad_rejected=history.log_abs_grad_rejected.mean(-1),
        # nan (both gradients 0) counts as -inf; +inf (the chosen got exactly no gradient) stays +inf
        log_grad_ratio=ratio.masked_fill(ratio.isnan(), -math.inf).amax(-1).masked_fill(ratio.isnan().all(-1), math.nan),
        margin=history.margins.mean(-1),
        loss=history.loss,
    )


def _by_class(values: torch.Tensor) -> dict[str, float]:
    return dict(zip((*MASS_CLASSES, "argmax"), values.tolist(), strict=True))


def _finite_max(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.max()) if finite.numel() else None


def indicators(result: ToyResult) -> list[dict]:
    """One dict per run: the 3D indicators the summary and the sweep table report."""
    c = curves(result)
    steps = result.config.steps
    window = max(1, round(DRIFT_WINDOW * steps))
    moves = mass_moves(result)
    n_runs = len(result.runs)
    kept_steps = result.kept_step or [None] * n_runs
    rows = []
    for r, run in enumerate(result.runs):
        chosen = c.chosen[r]
        peak_step = int(chosen.argmax())
        peak = float(chosen[peak_step])
        final = float(chosen[-1])
        falls = final < peak * (1 - FALL_TOLERANCE)
        shares = {name: c.shares[r, :, k] for k, name in enumerate(SHARES)}
        after_peak = {name: float(values[-1] - values[peak_step]) for name, values in shares.items() if name != "own chosen"}
        gainer = max(after_peak, key=after_peak.get)
        rise = float(c.chosen_logp[r, peak_step] - c.chosen_logp[r, 0])
        drop = float(c.rejected_logp[r, 0] - c.rejected_logp[r, peak_step])
        max_log_ratio = _finite_max(c.log_grad_ratio[r])
        ratios = c.log_grad_ratio[r]
        # +inf: at some step the rejected was pushed while the chosen got exactly no gradient (bpo's min);
        # -inf: the rejected never got any (sft)
        extreme = "+inf" if bool((ratios == math.inf).any()) else "-inf" if bool((ratios[~ratios.isnan()] == -math.inf).all()) else None
        rows.append(
            {
                "run": run.run_id,
                "scenario": run.scenario.name,
                "loss_name": run.loss,
                "hyperparameters": dict(run.hyperparameters),
                "initial_chosen": float(chosen[0]),
                "peak_chosen": peak,
                "peak_step": peak_step,
                "final_chosen": final,
                "chosen_fall_step": peak_step if falls else None,
                "initial_rejected": float(c.rejected[r, 0]),
                "final_rejected": float(c.rejected[r, -1]),
                "unseen_start": float(c.unseen[r, 0]),
                "unseen_end": float(c.unseen[r, -1]),
                "post_peak_fall": peak - final,
                # each prompt's mass in four shares (mass.py), mean over prompts: at the start, the chosen peak, the end
                "shares_start": {name: float(values[0]) for name, values in shares.items()},
                "shares_at_peak": {name: float(values[peak_step]) for name, values in shares.items()},
                "shares_end": {name: float(values[-1]) for name, values in shares.items()},
                # dispersion (Corollary 3): mass gained by the unseen 9-10, in no pair; <= 0 means none
                "dispersion": float(c.unseen[r, -1] - c.unseen[r, 0]),
                # the most the unseen 9-10 ever held above their start (a transient dispersion), and when
                "unseen_max_gain": float(c.unseen[r].max() - c.unseen[r, 0]),
                "unseen_max_step": int(c.unseen[r].argmax()),
                # which share gained most from the chosen peak to the end (None if none gained)
                "after_peak_gain_to": gainer if after_peak[gainer] > 0 else None,
                # Property 1 in log space, up to the chosen peak: nats the rejected lost per nat the chosen gained
                "chosen_logp_rise_to_peak": rise,
                "rejected_logp_drop_to_peak": drop,
                "drop_to_rise": drop / rise if rise > 0 else None,
                "initial_log_grad_ratio": _finite_max(c.log_grad_ratio[r, :1]),
                "max_log_grad_ratio": max_log_ratio,
                "max_grad_ratio": math.exp(max_log_ratio) if max_log_ratio is not None and max_log_ratio < 700 else None,
                "log_grad_ratio_extreme": extreme,
                "max_grad_ratio_step": int(c.log_grad_ratio[r].masked_fill(c.log_grad_ratio[r].isnan(), -math.inf).argmax()),
                "final_margin": float(c.margin[r, -1]),
                "margin_drift": float(c.margin[r, -1] - c.margin[r, -1 - window]),
                "final_loss": float(c.loss[r, -1]),
                "stopped_at": result.stopped_at[r] if result.stopped_at else None,
                # every class of response (mass.py), reference → last step and chosen peak → last step
                "mass_change": _by_class(moves.to_final[r]),
                "mass_change_after_peak": _by_class(moves.after_peak[r]),
                "reference_argmax_class": moves.reference_argmax[r],
                "final_argmax_class": moves.final_argmax[r],
                # the live detector and the guard (watch.py): warnings, actions, a guard's stop, the step kept
                "guard": result.config.guard,
                "three_d_events": result.events[r] if result.events else [],
                "guard_actions": result.actions[r] if result.actions else [],
                "guard_stopped_at": result.guard_stopped_at[r] if result.guard_stopped_at else None,
                "kept_step": kept_steps[r],
                "kept_chosen": float(chosen[kept_steps[r]]) if kept_steps[r] is not None else None,
            }
        )
    return rows


def _number(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def ratio_cell(row: dict) -> str:
    """The largest ln|∂L/∂x2 / ∂L/∂x1|: ∞ if the chosen ever got no gradient at all, -∞ if the rejected never did."""
    extreme = row.get("log_grad_ratio_extreme")
    if extreme == "+inf":  # with the largest finite value, if any step had one
        finite = row["max_log_grad_ratio"]
        return "∞" if finite is None else f"∞ ({finite:.1f})"
    if extreme == "-inf":
        return "-∞"
    return _number(row["max_log_grad_ratio"], "{:.1f}")


#: the sweep table, compact enough for an 80-column terminal: (header, cell of an indicators() row)
TABLE_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("chosen\npeak@step", lambda row: f"{row['peak_chosen']:.2f}@{row['peak_step']}"),
    ("chosen\nfinal", lambda row: f"{row['final_chosen']:.2f}"),
    ("falls\nfrom", lambda row: _number(row["chosen_fall_step"], "{:d}")),
    ("rejected\nfinal", lambda row: f"{row['final_rejected']:.0e}"),
    ("unseen 9–10\nstart→end", lambda row: f"{row['unseen_start']:.2f}→{row['unseen_end']:.0e}"),
    ("oth-ch\nstart→end", lambda row: f"{row['shares_start']['other chosen']:.2f}→{row['shares_end']['other chosen']:.2f}"),
    ("max ln\n|g2/g1|", lambda row: ratio_cell(row)),
    ("margin\nfinal", lambda row: f"{row['final_margin']:.1f}"),
)
