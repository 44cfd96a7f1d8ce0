"""The toy with train-dpo's live 3D detector and the guard acting on it (--guard, --keep-best).

The issue's measure of done: DPO with ``--guard sft`` ends, in every scenario, with the
chosen probability within 0.05 of its peak; plain DPO does not where it degrades
(scenario 1: 1.00 → 0.80, scenario 3: 0.46 → 0.35). Defaults, seed 0, 1000 steps.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dpo3d.toy.indicators import indicators
from dpo3d.toy.scenarios import SCENARIOS
from dpo3d.toy.train import ToyConfig, run_toy
from dpo3d_cli.app import app

WITHIN = 0.05


@pytest.fixture(scope="module")
def plain():
    return run_toy(ToyConfig(losses=("dpo",), seed=0))


@pytest.fixture(scope="module")
def guarded():
    return run_toy(ToyConfig(losses=("dpo",), seed=0, guard="sft"))


def by_scenario(result) -> dict[str, dict]:
    return {row["scenario"]: row for row in indicators(result)}


def test_guard_sft_keeps_the_chosen_within_0_05_of_its_peak_in_every_scenario(guarded):
    rows = by_scenario(guarded)
    for scenario in "1234":
        row = rows[scenario]
        assert row["peak_chosen"] - row["final_chosen"] <= WITHIN, (scenario, row["peak_chosen"], row["final_chosen"])
        assert row["guard_actions"] and row["guard_actions"][0]["trigger"] == "drastic_drop"
    # and it does more than hold the peak: the chosen ends near 1 everywhere
    assert min(rows[s]["final_chosen"] for s in "1234") > 0.99


def test_plain_dpo_falls_more_than_0_05_where_the_issue_says_it_falls(plain):
    rows = by_scenario(plain)
    for scenario in "13":
        assert rows[scenario]["peak_chosen"] - rows[scenario]["final_chosen"] > WITHIN, scenario
    # scenario 4 falls too (0.035 → 0.015), but by less than 0.05: its peak is that low
    assert rows["4"]["final_chosen"] < 0.5 * rows["4"]["peak_chosen"]
    assert all(row["guard_actions"] == [] for row in rows.values())


def test_the_guard_changes_the_loss_from_the_step_it_acts(plain, guarded):
    # scenario 1: the detector warns of a drastic drop at step 47 (rejected 5x faster down than the chosen up,
    # both past 0.02 nats); until then the runs are identical
    (action,) = by_scenario(guarded)["1"]["guard_actions"]
    step = action["step"]
    assert step == 47 and action["changes"]["loss"] == {"old": "dpo", "new": "dpo:1,sft:0.1"}
    assert torch.equal(guarded.history.probs[0, : step + 1], plain.history.probs[0, : step + 1])
    assert not torch.equal(guarded.history.probs[0, step + 1], plain.history.probs[0, step + 1])
    # the loss logged at that step is DPO + 0.1·(−log x1), through the registry's mixture
    h = guarded.history
    expected = (-F.logsigmoid(0.1 * h.margins[0, step]) - 0.1 * h.chosen_logps[0, step]).mean()
    assert float(h.loss[0, step]) == pytest.approx(float(expected), abs=1e-12)
    assert float(h.loss[0, step - 1]) == pytest.approx(float(-F.logsigmoid(0.1 * h.margins[0, step - 1]).mean()), abs=1e-12)


def test_the_probes_are_train_dpo_s_changes_since_step_0(plain):
    h = plain.history
    # step 0 is the reference itself (log of softmax against log_softmax: equal to ~1e-16)
    assert float(h.probe_chosen[0, 0]) == pytest.approx(0.0, abs=1e-12)
    assert float(h.probe_unseen[0, 0]) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(h.probe_chosen[0], (h.chosen_logps[0] - h.chosen_logps[0, :1]).mean(-1), rtol=0, atol=1e-9)
    torch.testing.assert_close(h.probe_rejected[0], (h.rejected_logps[0] - h.rejected_logps[0, :1]).mean(-1), rtol=0, atol=1e-9)
    greedy = h.probs[3].gather(-1, h.probs[3, 0].argmax(-1)[None, :, None].expand(h.probs.shape[1], 4, 1)).log()
    torch.testing.assert_close(h.probe_greedy[3], (greedy - greedy[:1]).mean((-1, -2)), rtol=0, atol=1e-9)
    events = [(e["property"], e["step"]) for e in by_scenario(plain)["4"]["three_d_events"]]
    assert events == [("drastic_drop", 35), ("degradation", 57)]  # the greedy gain is another chosen: no dispersion


def test_guard_stop_freezes_the_run_and_keeps_the_chosen_peak():
    result = run_toy(ToyConfig(scenarios=(SCENARIOS["1"], SCENARIOS["4"]), losses=("dpo",), steps=200, guard="stop"))
    s1, s4 = indicators(result)
    # scenario 4: degradation (the chosen 0.05 nats below its step-42 peak, the margin growing) at step 57 stops it
    assert s4["guard_stopped_at"] == 57 and s4["kept_step"] == 42
    (action,) = s4["guard_actions"]
    assert action["trigger"] == "degradation"
    assert action["changes"] == {"stop": {"old": False, "new": True}, "keep_step": {"old": None, "new": 42}}
    assert torch.equal(result.history.probs[1, 57], result.history.probs[1, -1])  # nothing moved after the stop
    # scenario 1 degrades only from step 479, past these 200 steps, so it runs on; the step kept is its peak
    assert s1["guard_stopped_at"] is None and s1["kept_step"] == 128 and s1["kept_chosen"] > 0.999


def test_keep_best_without_a_guard_only_reports():
    result = run_toy(ToyConfig(scenarios=(SCENARIOS["3"],), losses=("dpo",), steps=150, keep_best="chosen"))
    (row,) = indicators(result)
    assert row["guard_actions"] == [] and row["kept_step"] == 69
    assert row["kept_chosen"] == pytest.approx(float(result.history.probs[0, 69, [0, 1, 2, 3], [0, 1, 2, 3]].mean()))
    assert row["final_chosen"] < row["kept_chosen"]


def test_guard_flex_lowers_beta_l_of_dpo():
    result = run_toy(ToyConfig(scenarios=(SCENARIOS["3"],), losses=("dpo",), steps=30, guard="flex"))
    (row,) = indicators(result)
    (action,) = row["guard_actions"]
    assert action["step"] == 11 and action["changes"]["loss"] == {"old": "dpo", "new": "flex"}
    assert action["changes"]["beta_rejected"] == {"old": 0.1, "new": 0.05}


runner = CliRunner()


def test_cli_guard_logs_actions_to_metrics_summary_stderr_and_figures(tmp_path):
    out = tmp_path / "guard"
    result = runner.invoke(
        app,
        ["toy", "--scenario", "3", "--guard", "sft", "--max-steps", "30", "--metrics-every", "25", "--no-figures", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "s3-dpo: step 11: guard sft on drastic drop: sft_weight 0 → 0.1" in result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 11, 25, 30]  # the step the guard acted is always written
    assert records[1]["guard_actions"][0]["changes"]["sft_weight"] == {"old": 0.0, "new": 0.1}
    assert records[1]["warnings"][0].startswith("step 11: drastic drop")
    assert "probe_chosen_logp_delta" in records[0]
    (row,) = json.loads((out / "summary.json").read_text())["runs"]
    assert row["guard"] == "sft" and len(row["guard_actions"]) == 1
    assert json.loads((out / "summary.json").read_text())["config"]["guard_settings"]["sft_weight"] == 0.1


def test_figures_mark_the_guard_actions_and_the_kept_step():
    from matplotlib.figure import Figure

    from dpo3d.toy.figures import _guard_marks

    result = run_toy(ToyConfig(scenarios=(SCENARIOS["3"],), losses=("dpo",), steps=20, guard="sft", keep_best="chosen"))
    ax = Figure().subplots()
    _guard_marks(ax, result, 0)
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    assert lines == {"guard sft": [11, 11], "kept": [result.kept_step[0]] * 2}


def test_cli_guard_errors(tmp_path):
    result = runner.invoke(app, ["toy", "--sweep", "--losses", "dpo,ipo", "--guard", "flex", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "ipo does neither" in result.stderr
    result = runner.invoke(app, ["toy", "--guard", "pause", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown guard 'pause'; choose from sft, flex, stop" in result.stderr
    result = runner.invoke(app, ["toy", "--keep-best", "margin", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "keep-best 'margin'" in result.stderr
    assert not (tmp_path / "x").exists()
