"""`dpo3d diagnose`: the detector over finished runs, a table with mean ± sd per loss, a figure, other thresholds."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from dpo3d.watch.diagnose import diagnose, table
from dpo3d_cli.app import app

runner = CliRunner()


def write_run(folder, chosen, rejected, tokens=10, loss="dpo", lr=1e-5, other=None):
    """A run folder as train-dpo leaves it: metrics.jsonl with probe records (summed changes) and run_config.json."""
    folder.mkdir(parents=True)
    lines = []
    for step, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
        record = {"step": step * 5, "loss": 0.69, "probe_chosen_logp_delta": c, "probe_rejected_logp_delta": r,
                  "probe_chosen_logp_per_token_delta": c / tokens, "probe_rejected_logp_per_token_delta": r / tokens}
        if other is not None:
            record["probe_divergence_other_p"] = other[step]
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    config = {"lr": lr, "seed": 0, "extra": {"model": "/models/SmolLM2", "loss": loss, "hyperparameters": {}}}
    (folder / "run_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def runs(tmp_path):
    # two seeds whose chosen rises, peaks and falls (degradation), one that only falls (displacement)
    a = write_run(tmp_path / "dpo-seed0", [0, 2.0, 3.0, 0.5], [0, -3, -8, -20], other=[0.2, 0.2, 0.25, 0.3])
    b = write_run(tmp_path / "dpo-seed1", [0, 1.0, 4.0, 1.0], [0, -2, -9, -25], other=[0.2, 0.2, 0.2, 0.2])
    c = write_run(tmp_path / "ipo-seed0", [0, -1.5, -3.0, -4.0], [0, -4, -9, -12], loss="ipo")
    return a, b, c


def test_diagnose_reads_model_loss_and_names_what_each_run_shows(runs):
    a, _, c = runs
    found = diagnose(a)
    assert found.label == "SmolLM2 · dpo (beta 0.1) · lr 1e-05 · seed 0"
    # step 10: the chosen up 0.3 nats/token, the rejected down 0.8 (8x faster); step 15: 2.5 nats below the peak
    assert [(e["property"], e["step"]) for e in found.events] == [("drastic_drop", 10), ("degradation", 15)]
    assert found.row["peak_step"] == 10 and found.row["chosen_peak"] == 3.0 and found.row["chosen_final"] == 0.5
    assert (found.row["other_p_start"], found.row["other_p_final"]) == (0.2, 0.3)
    assert [(e["property"], e["step"]) for e in diagnose(c).events] == [("likelihood_displacement", 5)]


def test_table_gives_mean_and_sd_over_the_runs_of_a_loss(runs):
    found = [diagnose(run) for run in runs]
    text = table(found)
    dpo_row = next(line for line in text.splitlines() if line.startswith("| **dpo** |"))
    finals = [0.5, 1.0]
    assert f"{statistics.mean(finals):+.2f} ± {statistics.stdev(finals):.2f}" in dpo_row  # +0.75 ± 0.35
    assert "| 2 |" in dpo_row and "drastic drop ×1 (first at step 10); degradation ×2 (first at step 15)" in dpo_row
    ipo_row = next(line for line in text.splitlines() if line.startswith("| **ipo** |"))
    assert "likelihood displacement ×1 (first at step 5)" in ipo_row
    assert any(line.startswith("| dpo-seed1 |") for line in text.splitlines())  # and a row per run


def test_cli_writes_events_table_and_figure_and_takes_other_thresholds(runs, tmp_path):
    result = runner.invoke(app, ["diagnose", *map(str, runs), "--table", str(tmp_path / "t.md"),
                                 "--figure", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["run"].rsplit("/", 1)[-1], e["property"]) for e in events] == [
        ("dpo-seed0", "drastic_drop"), ("dpo-seed0", "degradation"), ("dpo-seed1", "degradation"),
        ("ipo-seed0", "likelihood_displacement")]
    assert (tmp_path / "t.md").read_text().startswith("| run | runs |")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    # other thresholds: falls of 5 nats and a 10x drop asked for; no fall here is that deep, no drop that fast
    strict = runner.invoke(app, ["diagnose", *map(str, runs), "--min-fall", "5", "--drop-ratio", "10"])
    assert strict.exit_code == 0 and strict.stdout == ""
    assert "no 3D-property above the thresholds" in strict.stderr


def test_cli_refuses_a_folder_without_metrics_in_one_line(tmp_path):
    result = runner.invoke(app, ["diagnose", str(tmp_path)])
    assert result.exit_code == 2 and "no metrics.jsonl" in result.stderr and "Traceback" not in result.output
    bad = runner.invoke(app, ["diagnose", str(tmp_path), "--drop-ratio", "0.5"])
    assert bad.exit_code == 2 and "drop_ratio > 1" in bad.stderr
