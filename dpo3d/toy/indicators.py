"""The 3D indicators of a toy run: the numbers that say whether DPO dropped, degraded, dispersed.

Curves are means over prompts (probabilities of a response class) or over pairs
(x1, x2, gradients, margins), one value per step, for every run at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .mass import MASS_CLASSES, mass_moves
from .scenarios import CHOSEN, N_PROMPTS, N_RESPONSES, REJECTED, UNSEEN, Pairs
from .train import ToyResult

#: chosen "starts to fall" when it ends more than this fraction below its peak
FALL_TOLERANCE = 0.01
#: the margin "stops" when it moves less than this over the last tenth of the steps (see margin_drift)
DRIFT_WINDOW = 0.1


@dataclass
class Curves:
    """Per run, per step: shape (runs, steps+1) each."""

    chosen: torch.Tensor  # π(i|i), mean over prompts
    rejected: torch.Tensor  # x2, mean over pairs
    unseen: torch.Tensor  # π(9|x) + π(10|x), mean over prompts
    outside: torch.Tensor  # mass on responses in none of the prompt's own pairs, mean over prompts
    chosen_logp: torch.Tensor  # log x1, mean over pairs
    rejected_logp: torch.Tensor  # log x2, mean over pairs
    log_grad_chosen: torch.Tensor  # log|∂L/∂x1|, mean over pairs (analytic)
    log_grad_rejected: torch.Tensor
    log_grad_ratio: torch.Tensor  # log(|∂L/∂x2| / |∂L/∂x1|), largest over pairs (nan where both are 0)
    margin: torch.Tensor  # (logp_w - ref_w) - (logp_l - ref_l), mean over pairs
    loss: torch.Tensor


def outside_mask(pairs: Pairs) -> torch.Tensor:
    """(prompts, responses): True for responses in none of that prompt's pairs."""
    mask = torch.ones(N_PROMPTS, N_RESPONSES, dtype=torch.bool)
    for prompt in range(N_PROMPTS):
        for response in pairs.responses_of(prompt):
            mask[prompt, response] = False
    return mask


def curves(result: ToyResult) -> Curves:
    history = result.history
    probs = history.probs  # (R, T, P, V)
    diagonal = torch.tensor(CHOSEN)
    ratio = history.log_abs_grad_rejected - history.log_abs_grad_chosen
    return Curves(
        chosen=probs[:, :, torch.arange(N_PROMPTS), diagonal].mean(-1),
        rejected=history.rejected_logps.exp().mean(-1),
        unseen=probs[..., list(UNSEEN)].sum(-1).mean(-1),
        outside=(probs * outside_mask(result.pairs)).sum(-1).mean(-1),
        chosen_logp=history.chosen_logps.mean(-1),
        rejected_logp=history.rejected_logps.mean(-1),
        log_grad_chosen=history.log_abs_grad_chosen.mean(-1),
        log_grad_rejected=history.log_abs_grad_rejected.mean(-1),
        # nan (both gradients 0) counts as -inf; +inf (the chosen got exactly no gradient) stays +inf
        log_grad_ratio=ratio.masked_fill(ratio.isnan(), -math.inf).amax(-1).masked_fill(ratio.isnan().all(-1), math.nan),
        margin=history.margins.mean(-1),
        loss=history.loss,
    )


#: where dispersed mass can land: responses outside the prompt's own pairs, by class
DESTINATIONS = ("unseen", "other chosen", "other rejected")


def mass_gains(result: ToyResult) -> torch.Tensor:
    """(runs, 3): mean over prompts of the mass gained from the reference to the last step by the
    responses outside the prompt's pairs, split into the unseen 9-10, the other prompts' chosen
    and the rejected 5-8 that are in none of the prompt's pairs (DESTINATIONS)."""
    probs = result.history.probs  # (R, T, P, V)
    gain = probs[:, -1] - probs[:, 0]  # (R, P, V)
    outside = outside_mask(result.pairs)
    classes = torch.zeros(len(DESTINATIONS), N_RESPONSES, dtype=torch.bool)
    classes[0, list(UNSEEN)] = True
    classes[1, list(CHOSEN)] = True
    classes[2, list(REJECTED)] = True
    masks = classes[:, None, :] & outside[None]  # (3, P, V)
    return torch.einsum("rpv,cpv->rc", gain, masks.to(gain.dtype)) / N_PROMPTS


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
    gains = mass_gains(result)
    moves = mass_moves(result)
    n_runs = len(result.runs)
    kept_steps = result.kept_step or [None] * n_runs
    rows = []
    for r, run in enumerate(result.runs):
        gained = {name: float(gains[r, k]) for k, name in enumerate(DESTINATIONS)}
        where = max(gained, key=gained.get)
        chosen = c.chosen[r]
        peak_step = int(chosen.argmax())
        peak = float(chosen[peak_step])
        final = float(chosen[-1])
        falls = final < peak * (1 - FALL_TOLERANCE)
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
                "outside_start": float(c.outside[r, 0]),
                "outside_at_peak": float(c.outside[r, peak_step]),
                "outside_end": float(c.outside[r, -1]),
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
                "mass_gain_unseen": gained["unseen"],
                "mass_gain_other_chosen": gained["other chosen"],
                "mass_gain_other_rejected": gained["other rejected"],
                # the class outside the pairs that gained most (None if none gained)
                "dispersed_to": where if gained[where] > 0 else None,
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
    ("unseen\nstart→end", lambda row: f"{row['unseen_start']:.2f}→{row['unseen_end']:.2f}"),
    ("outside\nstart→end", lambda row: f"{row['outside_start']:.2f}→{row['outside_end']:.2f}"),
    ("max ln\n|g2/g1|", lambda row: ratio_cell(row)),
    ("margin\nfinal", lambda row: f"{row['final_margin']:.1f}"),
)
