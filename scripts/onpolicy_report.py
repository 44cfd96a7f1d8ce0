"""The three arms of scripts/onpolicy_compare.sh over every seed found: a table and a figure.

    python scripts/onpolicy_report.py runs/onpolicy

Writes OUT/compare.md, OUT/compare.json and OUT/compare.png. For each arm (offline DPO on scenario-2 pairs,
iterate, iterate with TR-DPO sync): the probe pairs' chosen and rejected change since the start at the end of
training (summed and per token; mean ± sd over seeds), the detector's events on each seed's trajectory (the
iterate arms: the joined rounds of iterate.json; offline: its run's metrics), the accuracy of the samples each
arm trained from, and the greedy test accuracy in-domain (held-out ASDiv) and out-of-domain (SVAMP), pooled over
seeds with a 95% Wilson interval and per seed.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from dpo3d.data.run_log import read_log
from dpo3d.judges.intervals import interval_text, wilson
from dpo3d.watch.detector import DetectorSettings, ThreeDDetector, per_token_key, summed_key

ARMS = ("offline", "iterate", "tr-dpo", "offline-cosine")
LABELS = {"offline": "offline DPO, scenario 2", "iterate": "iterate", "tr-dpo": "iterate + TR-DPO sync",
          "start": "the starting model",
          "offline-cosine": "offline DPO, scenario 2, cosine lr with 10% warm-up"}
#: where each offline arm's run is (offline-cosine: a first offline run with train-dpo's default schedule,
#: kept where a seed has it; iterate's rounds use a constant lr)
OFFLINE_RUNS = {"offline": "train", "offline-cosine": "train-cosine"}
SETS = ("asdiv", "svamp")


def trajectory(seed_dir: Path, arm: str) -> tuple[list[dict], list[dict]] | None:
    """The arm's probe records (changes since its start) and the detector's events on them."""
    if arm in OFFLINE_RUNS:
        run = seed_dir / "offline" / OFFLINE_RUNS[arm]
        path = run / "metrics.jsonl"
        if not (run / "summary.json").is_file():
            return None
        records = [r for r in read_log(path) if isinstance(r.get("probe_chosen_logp"), float)]
    else:
        path = seed_dir / arm / "iterate.json"
        if not path.is_file():
            return None
        records = json.loads(path.read_text())["trajectory"]
    return records, ThreeDDetector(DetectorSettings()).read_all(records)


def arm_files(seed_dir: Path, arm: str, name: str) -> list[Path]:
    """The arm's ``name`` file (judged.jsonl, pairs.jsonl): the offline arm's one, or every round's."""
    if arm in OFFLINE_RUNS:
        return [seed_dir / "offline" / name]
    return sorted((seed_dir / arm).glob(f"round-*/{name}"))


def right(paths: list[Path], ids: set[str] | None = None) -> tuple[int, int]:
    """Right answers (a score above 0) and answers in judged files, only those of ``ids`` if given."""
    scores = [r["score"] for path in paths for r in read_log(path) if ids is None or r["id"] in ids]
    return sum(score > 0 for score in scores), len(scores)


def sample_accuracy(seed_dir: Path, arm: str) -> tuple[int, int]:
    """Right answers among the samples the arm trained from (every round's)."""
    return right(arm_files(seed_dir, arm, "judged.jsonl"))


def pairs_trained(seed_dir: Path, arm: str) -> int:
    """The pairs the arm trained on (every round's)."""
    return sum(len(read_log(path)) for path in arm_files(seed_dir, arm, "pairs.jsonl"))


def later_blocks(seed_dir: Path) -> dict[int, dict[str, tuple[int, int]]]:
    """Right samples on each later round's prompts (round 2 on): the starting policy's (the offline arm sampled
    every prompt once) and each iterate arm's previous-round model's (its round-r samples). The same prompts,
    so only the model differs. Empty without the offline arm's samples."""
    offline = seed_dir / "offline" / "judged.jsonl"
    if not offline.is_file():
        return {}
    blocks: dict[int, dict[str, tuple[int, int]]] = {}
    for judged in sorted((seed_dir / "iterate").glob("round-*/judged.jsonl")):
        number = judged.parent.name.removeprefix("round-")
        if not number.isdigit() or int(number) < 2:  # round 1 (no earlier model), or a copy such as round-2.bak
            continue
        number = int(number)
        block = {"start": right([offline], {r["id"] for r in read_log(judged)})}
        for arm in ("iterate", "tr-dpo"):
            mine = seed_dir / arm / f"round-{number}" / "judged.jsonl"
            if mine.is_file():
                block[arm] = right([mine])
        blocks[number] = block
    return dict(sorted(blocks.items()))


def test_result(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    (model,) = json.loads(path.read_text())["models"].values()
    return model["correct"], model["completions"]


def mean_sd(values: list[float], digits: int = 2) -> str:
    """Mean ± sd over seeds (one value alone as it is)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:+.{digits}f}"
    return f"{statistics.fmean(values):+.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def pooled(results: list[tuple[int, int]]) -> str:
    if not results:
        return "—"
    right, n = sum(r for r, _ in results), sum(n for _, n in results)
    return f"{interval_text(right / n, wilson(right, n))} ({right}/{n})"


def main(out: Path) -> None:
    seeds = sorted((p for p in out.glob("seed-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    report: dict = {"seeds": [p.name for p in seeds], "arms": {}}
    for arm in ARMS:
        arm_report = {"seeds": {}}
        for seed_dir in seeds:
            found = trajectory(seed_dir, arm)
            if found is None:
                continue
            records, events = found
            last = records[-1]
            entry = {"steps": last["step"],
                     **{f"{side}_{kind}": last.get(key(side)) for side in ("chosen", "rejected")
                        for kind, key in (("summed", summed_key), ("per_token", per_token_key))},
                     "chosen_peak_summed": max(r.get(summed_key("chosen"), 0.0) for r in records),
                     "events": [{"property": e["property"], "step": e["step"]} for e in events],
                     "samples_right": sample_accuracy(seed_dir, arm), "pairs": pairs_trained(seed_dir, arm),
                     "trajectory": [{k: r.get(k) for k in ("step", summed_key("chosen"), summed_key("rejected"),
                                                            per_token_key("chosen"), per_token_key("rejected"))}
                                    for r in records]}
            for name in SETS:
                entry[f"test_{name}"] = test_result(seed_dir / f"{arm}.test-{name}.summary.json")
            arm_report["seeds"][seed_dir.name] = entry
        report["arms"][arm] = arm_report
    report["start"] = {name: test_result(out / f"start.test-{name}.summary.json") for name in SETS}
    report["later_blocks"] = {seed.name: later_blocks(seed) for seed in seeds}
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    figure = plot(report, out / "compare.png")
    (out / "compare.md").write_text(markdown(report, figure.name))
    print((out / "compare.md").read_text())


def markdown(report: dict, figure: str) -> str:
    arms = {arm: arm_report for arm, arm_report in report["arms"].items() if arm_report["seeds"]}  # arms that ran
    lines = ["# Offline DPO vs on-policy iteration vs iteration with TR-DPO sync", "",
             f"Seeds: {', '.join(report['seeds'])}. Probe changes at the end of training, since the start, on the same "
             "probe pairs (iterate's round-1 pairs): mean ± sd over seeds, summed (nats) and per token.", "",
             "| arm | seeds | pairs per seed | chosen Δ summed | chosen Δ per token | chosen peak summed | "
             "rejected Δ summed | rejected Δ per token | samples right |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, arm_report in arms.items():
        runs = list(arm_report["seeds"].values())

        def col(key: str, runs: list[dict] = runs) -> list[float]:
            return [r[key] for r in runs if r.get(key) is not None]

        right = [tuple(r["samples_right"]) for r in runs]
        pairs = ", ".join(str(r["pairs"]) for r in runs)
        lines.append(f"| {LABELS[arm]} | {len(runs)} | {pairs} | {mean_sd(col('chosen_summed'))} | {mean_sd(col('chosen_per_token'), 3)} | "
                     f"{mean_sd(col('chosen_peak_summed'))} | {mean_sd(col('rejected_summed'))} | "
                     f"{mean_sd(col('rejected_per_token'), 3)} | {pooled(right)} |")
    lines += ["", "Greedy test accuracy, pooled over seeds (95% Wilson interval; right/answers), and per seed:", "",
              "| model | in-domain (held-out ASDiv) | out-of-domain (SVAMP) | per seed, in / out |", "|---|---|---|---|"]
    start = report["start"]
    lines.append(f"| {LABELS['start']} | {pooled([start['asdiv']] if start['asdiv'] else [])} | "
                 f"{pooled([start['svamp']] if start['svamp'] else [])} | (greedy: one value) |")
    for arm, arm_report in arms.items():
        runs = arm_report["seeds"]
        per_seed = ", ".join(f"{'/'.join(str(r[f'test_{s}'][0]) if r[f'test_{s}'] else '—' for s in SETS)}"
                             for r in runs.values())
        lines.append(f"| {LABELS[arm]} | {pooled([r['test_asdiv'] for r in runs.values() if r['test_asdiv']])} | "
                     f"{pooled([r['test_svamp'] for r in runs.values() if r['test_svamp']])} | {per_seed} |")
    lines += ["", "Sample accuracy on each later round's prompts (T 0.7): the starting policy (the offline arm's samples "
              "of the same prompts) against each iterate arm's previous-round model, pooled over seeds (95% Wilson), and "
              "per seed:", "", "| round | sampled by | right | per seed |", "|---|---|---|---|"]
    numbers = sorted({number for blocks in report["later_blocks"].values() for number in blocks})
    for number in numbers:
        blocks = [seed_blocks[number] for seed_blocks in report["later_blocks"].values() if number in seed_blocks]
        for key, label in (("start", "the starting policy"), ("iterate", f"iterate's round-{number - 1} model"),
                           ("tr-dpo", f"iterate + TR-DPO's round-{number - 1} model")):
            got = [block[key] for block in blocks if key in block]
            lines.append(f"| {number} | {label} | {pooled(got)} | {', '.join(f'{r}/{n}' for r, n in got)} |")
    lines += ["", "Detector events (property @ step) per seed:", ""]
    for arm, arm_report in arms.items():
        for seed, run in arm_report["seeds"].items():
            shown = "; ".join(f"{e['property']} @ {e['step']}" for e in run["events"]) or "none"
            lines.append(f"- {LABELS[arm]}, {seed}: {shown}")
    lines += ["", f"![chosen and rejected probe change per arm]({figure})", ""]
    return "\n".join(lines)


def plot(report: dict, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"offline": "tab:blue", "iterate": "tab:green", "tr-dpo": "tab:purple", "offline-cosine": "tab:gray"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, key, title in ((axes[0], summed_key, "summed (nats)"), (axes[1], per_token_key, "per token (nats)")):
        for arm, arm_report in report["arms"].items():
            for number, run in enumerate(arm_report["seeds"].values()):
                steps = [r["step"] for r in run["trajectory"]]
                for side, style in (("chosen", "-"), ("rejected", "--")):
                    ax.plot(steps, [r[key(side)] for r in run["trajectory"]], style, color=colours[arm], alpha=0.7,
                            linewidth=1.2, label=f"{LABELS[arm]}: {side}" if number == 0 else None)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("optimizer step (iterate: all rounds joined)")
        ax.set_title(f"probe log-prob change since the start, {title}")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/onpolicy"))
