"""`dpo3d toy` end to end through the command layer."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dpo3d_cli.app import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args: str):
    return runner.invoke(app, ["toy", *args])


def test_help_teaches():
    result = run("--help")
    assert result.exit_code == 0
    for words in ("--sweep", "--scenario", "--beta-rejected", "--init-dist", "metrics.jsonl", "both on-policy", "0.12"):
        assert words in result.output


def test_sweep_writes_metrics_summary_figures_and_table(tmp_path):
    out = tmp_path / "toy"
    result = run("--sweep", "--losses", "dpo,flex", "--steps", "30", "--sft-steps", "100", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # stdout carries only JSONL; the table goes to stderr
    for header in ("scen", "peak@step", "outside", "|g2/g1|"):
        assert header in result.stderr
    assert "flex" in result.stderr and "wrote" in result.stderr
    for name in ("likelihoods.png", "scenarios.png", "gradients.png", "sweep.png", "landscape.png"):
        assert (out / name).read_bytes()[:8] == PNG
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2 * 31
    assert json.loads(lines[-1])["run"] == "s4-flex" and json.loads(lines[-1])["step"] == 30
    summary = json.loads((out / "summary.json").read_text())
    assert [row["run"] for row in summary["runs"]][:2] == ["s1-dpo", "s1-flex"]
    assert summary["config"]["steps"] == 30 and len(summary["scenarios"]) == 4


def test_single_scenario_custom_distribution_and_hyperparameters(tmp_path):
    init = tmp_path / "mild.json"
    init.write_text(json.dumps({"name": "mild", "chosen": 0.4, "rejected": 0.1}))
    out = tmp_path / "custom"
    result = run(
        "--init-dist", str(init), "--loss", "flex", "--beta-rejected", "0.02", "--gamma", "1",
        "--steps", "10", "--sft-steps", "50", "--no-figures", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--gamma is used by none of: flex" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["runs"]
    assert row["run"] == "mild-flex" and row["hyperparameters"] == {"beta_chosen": 0.1, "beta_rejected": 0.02}
    assert summary["scenarios"][0]["target"][0][0] == 0.4
    assert not list(out.glob("*.png"))


def test_rerun_replaces_the_metrics(tmp_path):
    args = ("--scenario", "2", "--steps", "3", "--sft-steps", "10", "--no-figures", "--out", str(tmp_path))
    assert run(*args).exit_code == 0 and run(*args).exit_code == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"chosen": 0.9, "rejected": 0.1}')
    for args, message in [
        (("--scenario", "7"), "unknown scenario 7"),
        (("--loss", "nope"), "unknown loss 'nope'"),
        (("--init-dist", str(bad)), str(bad)),
        (("--sweep", "--losses", "dpo,dpo"), "listed twice"),
        (("--rejected-draw", "distinct", "--pairs-per-prompt", "5"), "at most 4"),
        (("--scenario", "1", "--lr", "0.3", "--steps", "200"), "underflowed"),
    ]:
        result = run(*args, "--out", str(tmp_path / "x"), "--no-figures", "--sft-steps", "10")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()  # nothing half-written
    result = run("--out", str(bad))
    assert result.exit_code == 2 and "is a file" in result.stderr


def test_sweep_of_every_loss_writes_the_table(tmp_path):
    from dpo3d.losses import LOSSES

    out = tmp_path / "all"
    result = run("--sweep", "--losses", "all", "--steps", "6", "--sft-steps", "10", "--out", str(out), "--workers", "2")
    assert result.exit_code == 0, result.output
    table = (out / "sweep.md").read_text()
    first, by_loss, mass = table.split("\n\n")
    lines = first.splitlines()
    assert "chosen peak (step)" in lines[0] and "dispersed mass went to" in lines[0]
    assert len(lines) == 2 + 4 * len(LOSSES)  # header, rule, one line per (scenario, loss)
    for name in LOSSES:
        assert f"| 1 | {name} |" in first and f"| 4 | {name} |" in first
    assert len(by_loss.strip().splitlines()) == 2 + len(LOSSES)
    mass_lines = mass.strip().splitlines()
    assert "other chosen" in mass_lines[0] and "unseen" in mass_lines[0] and "reference argmax" in mass_lines[0]
    assert len(mass_lines) == 2 + 4 * len(LOSSES)
    assert not list(out.glob("*.png"))  # more than 8 losses: no figures
    # metrics.jsonl thinned to every 25th step (and the last): steps 0 and 6 per run
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2 * 4 * len(LOSSES)


def test_loss_arg_reaches_a_new_loss(tmp_path):
    out = tmp_path / "bpo"
    result = run("--scenario", "2", "--loss", "bpo", "--loss-arg", "alpha=0.5", "--steps", "3", "--sft-steps", "10",
                 "--no-figures", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "summary.json").read_text())["runs"]
    assert row["hyperparameters"] == {"beta": 0.1, "alpha": 0.5}
    result = run("--loss", "dpo", "--loss-arg", "alpha=0.5", "--steps", "3", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "none of dpo takes 'alpha'" in result.stderr
