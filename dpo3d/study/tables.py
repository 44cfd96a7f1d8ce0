"""The study's tables in the paper's layouts, as data (study.json) and as Markdown (study.md).

- Table 1: mean per-token log-prob of the chosen and the rejected responses of each
  scenario's training pairs, under the start ("before") and after training;
- Table 2: test accuracy of the start and of each scenario's model (math-verify; with
  the LLM judge, the shares of answers scored 5 and 4-or-5, the paper's columns);
- Table 10: accuracy, losses × scenarios;
- the 3D detector's events of every cell, the off-policy sources under the start
  policy, Fig. 4's steadiness numbers and what each stage cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .config import SCENARIO_TEXT, START, StudyConfig, cell_label


def _per_token(logprobs: Mapping | None, side: str) -> float | None:
    return (logprobs or {}).get(f"{side}_per_token")


def table1(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping]) -> list[dict]:
    """One row per (scenario, loss): chosen and rejected per-token log-probs before → after."""
    rows = []
    for scenario in config.scenarios:
        before = start["logprobs"].get(f"scenario{scenario}")
        for loss in config.losses:
            after = cells[cell_label(scenario, loss)]["logprobs"].get(f"scenario{scenario}")
            rows.append({
                "scenario": scenario, "loss": loss, "pairs": (before or {}).get("count"),
                "chosen_before": _per_token(before, "chosen"), "chosen_after": _per_token(after, "chosen"),
                "rejected_before": _per_token(before, "rejected"), "rejected_after": _per_token(after, "rejected"),
            })
    return rows


def _accuracy(summary: Mapping) -> dict:
    row = {"accuracy": summary.get("accuracy"), "correct": summary.get("correct"), "answers": summary.get("completions"),
           "no_answer": summary.get("no_answer")}
    llm = summary.get("llm")
    if llm is not None:
        row.update(share_5=llm.get("share_5"), share_4_or_5=llm.get("share_4_or_5"), llm_judged=llm.get("judged"))
    return row


def table2(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping]) -> list[dict]:
    """The start, then every cell: test accuracy (and the LLM judge's shares)."""
    rows = [{"model": START, "scenario": None, "loss": None, **_accuracy(start["summary"])}]
    for loss in config.losses:
        for scenario in config.scenarios:
            label = cell_label(scenario, loss)
            rows.append({"model": label, "scenario": scenario, "loss": loss, **_accuracy(cells[label]["summary"])})
    return rows


def table10(config: StudyConfig, start: Mapping, cells: Mapping[str, Mapping]) -> dict:
    """Accuracy, a row per loss (and the start), a column per scenario."""
    return {
        "columns": [f"scenario {s}" for s in config.scenarios],
        "start": start["summary"].get("accuracy"),
        "rows": {loss: {f"scenario {s}": cells[cell_label(s, loss)]["summary"].get("accuracy") for s in config.scenarios}
                 for loss in config.losses},
    }


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
            f"`{config['test_prompts']}` ({study['data']['test_prompts']}); {config['n']} samples per prompt at "
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
    out += ["## Table 1: per-token log-prob of chosen and rejected, before → after", ""]
    out += _md_table(["scenario", "loss", "pairs", "chosen before", "chosen after", "rejected before", "rejected after"],
                     [[r["scenario"], r["loss"], r["pairs"], _f(r["chosen_before"]), _f(r["chosen_after"]),
                       _f(r["rejected_before"]), _f(r["rejected_after"])] for r in study["table1"]])
    out += ["## Table 2: test accuracy", ""]
    header = ["model", "accuracy (math-verify)", "no answer"] + (["LLM 5 points", "LLM 4&5 points"] if llm else [])
    out += _md_table(header, [
        [r["model"], f"{_pct(r['accuracy'])} ({r['correct']}/{r['answers']})", _pct(r["no_answer"])]
        + ([_pct(r.get("share_5")), _pct(r.get("share_4_or_5"))] if llm else []) for r in study["table2"]])
    t10 = study["table10"]
    out += ["## Table 10: accuracy, losses × scenarios", ""]
    out += _md_table(["loss", *t10["columns"]], [[START, *[_pct(t10["start"])] * len(t10["columns"])]] + [
        [loss, *[_pct(row[c]) for c in t10["columns"]]] for loss, row in t10["rows"].items()])
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
