"""The study's tables in the paper's layouts, as data (study.json) and as Markdown (study.md).

- Table 1: mean per-token log-prob of the chosen and the rejected responses of each
  scenario's training pairs, under the start ("before") and after training, with each cell's
  pairs, optimizer updates and passes over its pairs;
- Table 2: test accuracy of the start and of each scenario's model (math-verify; with
  the LLM judge, the shares of answers scored 5 and 4-or-5, the paper's columns), in-domain and
  (when given) out-of-domain, each with its 95% Wilson interval;
- Table 10: accuracy, losses × scenarios, likewise;
- the 3D detector's events of every cell, the off-policy sources under the start
  policy, Fig. 4's steadiness numbers and what each stage cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dpo3d.judges.intervals import interval_text, wilson_json

from .config import SCENARIO_TEXT, START, StudyConfig, cell_label


def _per_token(logprobs: Mapping | None, side: str) -> float | None:
    return (logprobs or {}).get(f"{side}_per_token")


def table1(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping]) -> list[dict]:
    """One row per (scenario, loss): chosen and rejected per-token log-probs before → after, and the
    cell's optimizer updates and passes over its pairs."""
    rows = []
    for scenario in config.scenarios:
        before = start["logprobs"].get(f"scenario{scenario}")
        for loss in config.losses:
            cell = cells[cell_label(scenario, loss)]
            after = cell["logprobs"].get(f"scenario{scenario}")
            training = cell.get("training") or {}
            rows.append({
                "scenario": scenario, "loss": loss, "pairs": (before or {}).get("count"),
                "updates": training.get("updates"), "passes": training.get("passes"),
                "chosen_before": _per_token(before, "chosen"), "chosen_after": _per_token(after, "chosen"),
                "rejected_before": _per_token(before, "rejected"), "rejected_after": _per_token(after, "rejected"),
            })
    return rows


def accuracy_interval(summary: Mapping | None) -> list[float] | None:
    """The 95% Wilson interval of a test set's accuracy (n: its answers)."""
    if not summary or summary.get("correct") is None or not summary.get("completions"):
        return None
    return wilson_json(summary["correct"], summary["completions"])


def share_text(row: Mapping, key: str) -> str:
    """An LLM judge's share ("share_5" or "share_4_or_5") with its 95% Wilson interval, in percent."""
    return interval_text(row.get(key), row.get(f"{key}_interval"))


def _accuracy(summary: Mapping, ood: Mapping | None) -> dict:
    row = {"accuracy": summary.get("accuracy"), "interval": accuracy_interval(summary), "correct": summary.get("correct"),
           "answers": summary.get("completions"), "no_answer": summary.get("no_answer")}
    llm = summary.get("llm")
    if llm is not None:
        row.update(share_5=llm.get("share_5"), share_5_interval=llm.get("share_5_interval"),
                   share_4_or_5=llm.get("share_4_or_5"), share_4_or_5_interval=llm.get("share_4_or_5_interval"),
                   llm_judged=llm.get("judged"))
    if ood is not None:
        row.update(ood_accuracy=ood.get("accuracy"), ood_interval=accuracy_interval(ood), ood_correct=ood.get("correct"),
                   ood_answers=ood.get("completions"), ood_no_answer=ood.get("no_answer"))
    return row


def table2(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping]) -> list[dict]:
    """The start, then every cell: test accuracy with its interval (and the LLM judge's shares), in-domain
    and, with an out-of-domain set, out-of-domain (the ``ood_`` keys)."""
    rows = [{"model": START, "scenario": None, "loss": None, **_accuracy(start["summary"], start.get("ood"))}]
    for loss in config.losses:
        for scenario in config.scenarios:
            label = cell_label(scenario, loss)
            cell = cells[label]
            rows.append({"model": label, "scenario": scenario, "loss": loss, **_accuracy(cell["summary"], cell.get("ood"))})
    return rows


def _grid(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping], key: str) -> dict:
    """The accuracies and intervals of one test set (``key``: summary, in-domain; ood) as losses × scenarios."""

    def summary(result: Mapping) -> Mapping | None:
        return result.get(key)

    grid = {loss: {f"scenario {s}": summary(cells[cell_label(s, loss)]) or {} for s in config.scenarios}
            for loss in config.losses}
    return {
        "start": (summary(start) or {}).get("accuracy"), "start_interval": accuracy_interval(summary(start)),
        "rows": {loss: {c: v.get("accuracy") for c, v in row.items()} for loss, row in grid.items()},
        "intervals": {loss: {c: accuracy_interval(v) for c, v in row.items()} for loss, row in grid.items()},
    }


def table10(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping]) -> dict:
    """Accuracy with its interval, a row per loss (and the start), a column per scenario; with an
    out-of-domain set, the same grid of its accuracies under ``out_of_domain``."""
    ood = start.get("ood") is not None
    return {"columns": [f"scenario {s}" for s in config.scenarios], **_grid(config, start, cells, "summary"),
            "out_of_domain": _grid(config, start, cells, "ood") if ood else None}


def detector_events(config: StudyConfig, cells: Mapping[str, Mapping]) -> dict[str, list[dict]]:
    return {cell_label(s, loss): cells[cell_label(s, loss)]["events"] for loss in config.losses for s in config.scenarios}


def sources(start: Mapping, accuracy: Mapping[str, float]) -> list[dict]:
    """Each source of responses under the start policy: per-token log-prob and share judged right."""
    rows = []
    for name, values in start["logprobs"].items():
        if name.startswith("source:"):
            source = name.split(":", 1)[1]
            rows.append({"source": source, "responses": values["count"], "per_token": values.get("completion_per_token"),
                         "right": accuracy.get(source, 1.0 if source == "reference" else None)})
    return rows


# --------------------------------------------------------------------------- Markdown


def _f(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def markdown(study: Mapping) -> str:
    config = study["config"]
    loop = config["loop"]
    llm = config.get("llm_judge") is not None
    out = [f"# dpo3d study: {config['model']}", ""]
    out += [f"Training prompts `{config['train_prompts']}` ({study['data']['train_prompts']}), test prompts "
            f"`{config['test_prompts']}` ({study['data']['test_prompts']})"
            + (f", out-of-domain test prompts `{config['ood_test_prompts']}` ({study['data']['ood_test_prompts']})"
               if study["data"].get("ood_test_prompts") is not None else "")
            + f"; {config['n']} samples per prompt at "
            f"temperature {config['temperature']}; off-policy rejected responses: {study['data']['weak']}. Every cell: "
            f"{loop['max_steps']} steps of {loop['batch_size']}×{loop['grad_accum']} pairs, lr {loop['lr']:g}, "
            f"β {config['beta']:g}, seed {loop['seed']}.", ""]
    out += ["## Pairs", ""]
    out += _md_table(["scenario", "chosen / rejected", "pairs built", "train", "held out"], [
        [s, SCENARIO_TEXT[int(s)], v["pairs"], v["train"], v["heldout"]] for s, v in study["data"]["pairs"].items()])
    out += ["## Off-policy sources under the start policy", "",
            "Mean per-token log-prob of each source's responses under the starting policy, and the share the judge "
            "scored right: an off-policy source has a low likelihood; a rejected source should be wrong.", ""]
    out += _md_table(["source", "responses", "per-token log-prob", "right"],
                     [[r["source"], r["responses"], _f(r["per_token"]), _pct(r["right"])] for r in study["sources"]])
    out += ["## Table 1: per-token log-prob of chosen and rejected, before → after", "",
            "Each cell's training pairs, its optimizer updates and its passes over its pairs (updates × batch × "
            "grad_accum × processes / pairs): equal passes across scenarios make their comparison fair.", ""]
    out += _md_table(["scenario", "loss", "pairs", "updates", "passes", "chosen before", "chosen after",
                      "rejected before", "rejected after"],
                     [[r["scenario"], r["loss"], r["pairs"], r.get("updates", "—"), _f(r.get("passes"), 2),
                       _f(r["chosen_before"]), _f(r["chosen_after"]), _f(r["rejected_before"]), _f(r["rejected_after"])]
                      for r in study["table1"]])
    ood = study["data"].get("ood_test_prompts") is not None
    out += ["## Table 2: test accuracy", "",
            "Accuracy (math-verify) with its 95% Wilson score interval, in percent; n is the number of test answers."
            + (f" Out-of-domain: `{config['ood_test_prompts']}` ({study['data']['ood_test_prompts']} prompts)." if ood else ""),
            ""]
    header = ["model", "in-domain", *(["out-of-domain"] if ood else []), "no answer"] + (
        ["LLM 5 points", "LLM 4&5 points"] if llm else [])
    out += _md_table(header, [
        [r["model"], f"{interval_text(r['accuracy'], r.get('interval'))} ({r['correct']}/{r['answers']})",
         *([f"{interval_text(r.get('ood_accuracy'), r.get('ood_interval'))} ({r.get('ood_correct')}/{r.get('ood_answers')})"]
           if ood else []), _pct(r["no_answer"])]
        + ([share_text(r, "share_5"), share_text(r, "share_4_or_5")] if llm else []) for r in study["table2"]])
    t10 = study["table10"]
    grids = [("in-domain", t10)] + ([("out-of-domain", t10["out_of_domain"])] if t10.get("out_of_domain") else [])
    out += ["## Table 10: accuracy, losses × scenarios", "",
            "Accuracy with its 95% Wilson interval" + (", in-domain and out-of-domain." if len(grids) > 1 else "."), ""]
    columns = [f"{c} {name}" if len(grids) > 1 else c for c in t10["columns"] for name, _ in grids]

    def cells_of(row_of) -> list[str]:
        return [row_of(grid, c) for c in t10["columns"] for _, grid in grids]

    def start_cell(grid: Mapping, column: str) -> str:
        return interval_text(grid["start"], grid.get("start_interval"))

    out += _md_table(["loss", *columns], [[START, *cells_of(start_cell)]] + [
        [loss, *cells_of(lambda grid, c, loss=loss: interval_text(grid["rows"][loss][c], (grid.get("intervals") or {})
                                                                  .get(loss, {}).get(c)))]
        for loss in t10["rows"]])
    out += ["## 3D detector events", ""]
    for label, events in study["events"].items():
        shown = "; ".join(f"{e['property']} at step {e['step']}" for e in events) or "none"
        out.append(f"- **{label}**: {shown}")
    out += ["", "![probe curves](probes.png)", ""]
    if study.get("fig4"):
        out += ["## Figure 4: held-out preference accuracy, reward model vs DPO (scenario 1)", ""]
        out += _md_table(["run", "start", "final", "min", "max", "share against the trend"], [
            [name, _f(s["start"]), _f(s["final"]), _f(s["min"]), _f(s["max"]), _f(s["against_share"])]
            for name, s in study["fig4"].items()])
        out += ["![Fig. 4](fig4.png)", ""]
    out += ["## Cost", ""]
    out += _md_table(["stage", "seconds", "details"], [
        [name, _f(cost.get("seconds"), 1), ", ".join(f"{k} {v}" for k, v in cost.items() if k != "seconds")]
        for name, cost in study["costs"].items()])
    return "\n".join(out)
