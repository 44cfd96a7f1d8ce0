"""Draw a training run's curves (OUT/metrics.jsonl) to PNG: the 3D-properties at a glance."""

from __future__ import annotations

from pathlib import Path

from dpo3d.data.run_log import read_log

from ..watch.detector import per_token_key
from ..watch.diagnose import diagnose
from ..watch.divergence import PREFIX
from ..watch.figures import mark_events, series, shown_on


def _below(ax, twin=None) -> None:
    """The axis's legend (with its twin's) under it, never over its lines."""
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=7)


def plot_run(run: str | Path, target: str | Path | None = None) -> Path:
    """Six panels: probe log-prob changes summed (chosen/rejected/unseen, the starting policy's greedy
    responses and samples, the policy's per-token entropy along those on the right axis, guard actions
    as vertical lines) and per token, each detector event marked where it fired; loss and accuracy;
    the next-token split at the first token where chosen and rejected differ; log|∂L/∂x| per side;
    the parameter-gradient norm per side (if measured). The title names model, loss, β and lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    records = read_log(run / "metrics.jsonl")
    if not records:
        raise ValueError(f"{run}: no metrics.jsonl to plot")
    fig, axes = plt.subplots(3, 2, figsize=(12, 12.5), constrained_layout=True)
    try:
        found = diagnose(run)  # the detector over the records, and the run's model, loss, β and lr
        events = found.events
        fig.suptitle(found.label)
    except ValueError:  # no probe records: nothing for the detector to read
        events = []
    ax = axes[0][0]
    for key, label, color in (
        ("probe_chosen_logp_delta", "chosen", "tab:green"),
        ("probe_rejected_logp_delta", "rejected", "tab:red"),
        ("probe_unseen_logp_delta", "unseen", "tab:gray"),
        ("probe_greedy_logp_delta", "policy's greedy", "tab:blue"),
        ("probe_samples_logp_delta", "policy's samples", "tab:cyan"),
    ):
        steps, values = series(records, key)
        if steps:
            ax.plot(steps, values, "--" if "policy" in label else "-", label=label, color=color)
    for record in records:  # what a --guard did, where it did it
        for action in record.get("guard_actions") or []:
            ax.axvline(record["step"], color="tab:purple", lw=1, ls=":")
            ax.annotate(action.get("guard", "guard"), (record["step"], 0), xytext=(2, 4), textcoords="offset points",
                        color="tab:purple", fontsize=7, rotation=90)
    mark_events(ax, events, records, "probe_chosen_logp_delta")
    ax.axhline(0, color="black", lw=0.5)
    ax.set(title="log-prob change since step 0 (probe set, nats summed)", xlabel="step")
    twin = None
    entropies = [(key, label, color) for key, label, color in (
        ("probe_greedy_entropy", "entropy on greedy", "tab:blue"),
        ("probe_samples_entropy", "entropy on samples", "tab:cyan"),
    ) if series(records, key)[0]]
    if entropies:  # squeezing narrows the policy along its own responses: its per-token entropy falls
        twin = ax.twinx()
        for key, label, color in entropies:
            twin.plot(*series(records, key), ":", marker=".", label=label, color=color)
        twin.set(ylabel="policy's per-token entropy (nats)")
    _below(ax, twin)
    ax = axes[0][1]
    ax.plot(*series(records, "loss"), label="train loss", color="tab:blue")
    if any("eval_loss" in r for r in records):
        ax.plot(*series(records, "eval_loss"), "o-", label="eval loss", color="tab:purple")
    ax.set(title="loss", xlabel="step")
    twin = ax.twinx()
    twin.plot(*series(records, "accuracy"), ":", label="train accuracy", color="tab:orange")
    if any("eval_accuracy" in r for r in records):
        twin.plot(*series(records, "eval_accuracy"), "s--", label="eval accuracy", color="tab:brown")
    twin.set(ylim=(-0.05, 1.05), ylabel="reward accuracy")
    _below(ax, twin)
    ax = axes[1][0]
    for side, color in (("chosen", "tab:green"), ("rejected", "tab:red")):
        ax.plot(*series(records, per_token_key(side)), label=side, color=color)
    mark_events(ax, events, records, per_token_key("chosen"))
    ax.axhline(0, color="black", lw=0.5)
    ax.set(title="the same per token (nats/token): the fair rate comparison", xlabel="step")
    _below(ax)
    ax = axes[1][1]
    split = [(f"{PREFIX}{name}_p", label, color) for name, label, color in (
        ("chosen", "chosen's token", "tab:green"), ("rejected", "rejected's token", "tab:red"),
        ("other", "every other token", "tab:gray"))]
    if series(records, split[0][0])[0]:
        for key, label, color in split:
            ax.plot(*series(records, key), label=label, color=color)
        mark_events(ax, shown_on(events, split[2][0]), records, split[2][0])  # only the dispersion this panel shows
        ax.set(ylim=(-0.02, 1.02))
    ax.set(title="next-token probability at the first token where chosen and rejected differ", xlabel="step")
    _below(ax)
    ax = axes[2][0]
    ax.plot(*series(records, "log_grad_chosen"), label="log|∂L/∂x1| (chosen)", color="tab:green")
    ax.plot(*series(records, "log_grad_rejected"), label="log|∂L/∂x2| (rejected)", color="tab:red")
    ax.set(title="gradient w.r.t. the sequence probabilities (log scale)", xlabel="step")
    _below(ax)
    ax = axes[2][1]
    if any("grad_norm_chosen_side" in r for r in records):
        ax.plot(*series(records, "grad_norm_chosen_side"), "o-", label="from chosen side", color="tab:green")
        ax.plot(*series(records, "grad_norm_rejected_side"), "o-", label="from rejected side", color="tab:red")
        ax.set(title="parameter-gradient norm by side")
    else:
        ax.plot(*series(records, "margin"), label="reward margin", color="tab:blue")
        ax.set(title="implicit reward margin")
    ax.set(xlabel="step")
    _below(ax)
    target = Path(target) if target else run / "curves.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


#: per task, the panels of its curves figure: (title, [(metrics key, label), ...])
PANELS = {
    "rm": [
        ("Bradley-Terry loss", [("loss", "train"), ("eval_loss", "held-out")]),
        ("preference accuracy (r_w > r_l)", [("accuracy", "train batch"), ("eval_accuracy", "held-out")]),
        ("rewards", [("chosen_reward", "chosen r_w"), ("rejected_reward", "rejected r_l"), ("margin", "margin")]),
        ("∂L/∂r per side: equal and opposite", [("reward_grad_chosen", "chosen"), ("reward_grad_rejected", "rejected")]),
    ],
    "ppo": [
        ("mean reward of the rollouts", [("reward", "reward")]),
        ("KL to the reference (nats per response)", [("kl", "KL")]),
        ("policy entropy (nats per token)", [("entropy", "entropy")]),
        ("clipping", [("clip_fraction", "policy clip fraction"), ("value_clip_fraction", "value clip fraction"),
                      ("approx_kl", "approx KL old→new")]),
    ],
    "sft": [
        ("response NLL per token", [("loss", "train"), ("eval_loss", "held-out")]),
    ],
}


def plot_panels(run: str | Path, task: str, target: str | Path | None = None) -> Path:
    """The curves of a train-rm, ppo or sft run, one panel per group of :data:`PANELS`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    records = read_log(run / "metrics.jsonl")
    if not records:
        raise ValueError(f"{run}: no metrics.jsonl to plot")
    panels = PANELS[task]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), constrained_layout=True, squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=True):
        for key, label in lines:
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, "o-" if len(steps) < 30 else "-", ms=3, label=label)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    target = Path(target) if target else run / "curves.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
