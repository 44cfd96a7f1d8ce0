"""What a toy run leaves in ``--out``: metrics.jsonl, summary.json and the figures.

metrics.jsonl has one record per run per step (step 0 is the reference model,
before any update), run after run::

    {"run": "s1-dpo", "scenario": "1", "loss_name": "dpo", "step": 0, "loss": 0.693,
     "probs": [[π(1|1), ..., π(10|1)], ..., [π(1|4), ..., π(10|4)]],
     "pairs": [{"prompt": 1, "chosen": 1, "rejected": 5, "x1": ..., "x2": ...,
                "log_abs_grad_x1": ..., "log_abs_grad_x2": ...,          # analytic (registry)
                "autograd_grad_x1": ..., "autograd_grad_x2": ...,        # measured, signed
                "margin": ...}, ...],
     "probe_chosen_logp_delta": ..., "probe_rejected_logp_delta": ...,   # the detector's probes
     "probe_unseen_logp_delta": ..., "probe_greedy_logp_delta": ...}     # (changes since step 0, nats)

A step where the live detector warned adds ``"warnings": [message, ...]``; a step where
the guard acted adds ``"guard_actions": [GuardAction.record(), ...]`` and is always
written, whatever ``metrics_every``. summary.json holds both per run too.

Prompts and responses are numbered from 1, as in the paper. ``null`` stands for
a value JSON cannot hold (log 0 when a gradient is exactly zero).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from dpo3d.data.records import dumps, json_safe, open_output, write_json

from .indicators import indicators
from .model import one_thread
from .train import ToyResult

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def _as_json(values) -> list:
    """A tensor as nested lists, non-finite values (log 0 = -inf) as None; cheap when all are finite."""
    listed = values.tolist()
    return listed if bool(values.isfinite().all()) else json_safe(listed)


def metric_records(result: ToyResult, every: int = 1) -> Iterator[dict]:
    """Every ``every``-th step's record per run (and always the last step and the steps the guard acted)."""
    history = result.history
    pairs = result.pairs.as_records()
    for r, run in enumerate(result.runs):
        probs = _as_json(history.probs[r])
        losses = _as_json(history.loss[r])
        columns = {
            "x1": history.chosen_logps[r].exp(),
            "x2": history.rejected_logps[r].exp(),
            "log_abs_grad_x1": history.log_abs_grad_chosen[r],
            "log_abs_grad_x2": history.log_abs_grad_rejected[r],
            "autograd_grad_x1": history.autograd_grad_chosen[r],
            "autograd_grad_x2": history.autograd_grad_rejected[r],
            "margin": history.margins[r],
        }
        names = list(columns)
        values = [_as_json(column) for column in columns.values()]
        probes = {
            "probe_chosen_logp_delta": history.probe_chosen[r].tolist(),
            "probe_rejected_logp_delta": history.probe_rejected[r].tolist(),
            "probe_unseen_logp_delta": history.probe_unseen[r].tolist(),
            "probe_greedy_logp_delta": history.probe_greedy[r].tolist(),
        }
        warnings, actions = defaultdict(list), defaultdict(list)
        for event in result.events[r] if result.events else []:
            warnings[event["step"]].append(event["message"])
        for action in result.actions[r] if result.actions else []:
            actions[action["step"]].append(action)
        steps = result.config.steps
        for step in sorted(set(range(0, steps + 1, every)) | {steps} | set(actions)):
            per_pair = zip(*(column[step] for column in values), strict=True)
            extra = {"warnings": warnings[step]} if step in warnings else {}
            if step in actions:
                extra["guard_actions"] = actions[step]
            yield {
                "run": run.run_id,
                "scenario": run.scenario.name,
                "loss_name": run.loss,
                "step": step,
                "loss": losses[step],
                "probs": probs[step],
                "pairs": [{**pair, **dict(zip(names, numbers, strict=True))} for pair, numbers in zip(pairs, per_pair, strict=True)],
                **{key: column[step] for key, column in probes.items()},
                **extra,
            }


def summary(result: ToyResult) -> dict:
    """The run's config, its scenarios as set and as step 1 reached them, its pairs, and the indicators."""
    return json_safe(
        {
            "config": result.config.to_dict(),
            "scenarios": [
                {
                    "name": scenario.name,
                    "title": scenario.title,
                    "target": result.targets[s].tolist(),
                    "reference": result.reference_probs[s].tolist(),
                    "sft_kl": float(result.sft_kl[s]),
                }
                for s, scenario in enumerate(result.config.scenarios)
            ],
            "pairs": result.pairs.as_records(),
            "runs": indicators(result),
        }
    )


def write_outputs(
    result: ToyResult, out: str | Path, figures: bool = True, landscape_losses: Sequence[str] = (), metrics_every: int = 1
) -> list[Path]:
    """Write metrics.jsonl, summary.json and (unless ``figures`` is False) the PNGs; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open_output(out / METRICS) as stream:
        for record in metric_records(result, metrics_every):
            stream.write(dumps(record) + "\n")
    write_json(summary(result), out / SUMMARY)
    written = [out / METRICS, out / SUMMARY]
    if figures:
        from .figures import write_figures

        with one_thread():
            written += write_figures(result, out, landscape_losses)
    return written
