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
    for words in ("--sweep", "--scenario", "--beta-rejected", "--init-dist", "metrics.jsonl", "both on-policy", "0.12", "--loss-arg", "--list-losses",
                  "--seeds", "--ablation", "mean ± sd", "other prompts' chosen"):  # fmt: skip
        assert words in result.output


def test_help_calls_only_the_unseen_9_10_dispersion():
    text = " ".join(run("--help").output.replace("│", " ").split())
    assert "grey dashed the mass outside" not in text
    # the guard's sentence lists the detector's warning names (dpo3d.watch.guard's stop_on), not a reading of the toy's mass
    sentences = [s for s in text.replace("; ", ". ").split(". ") if "dispersion" in s.lower() and "freezes the run on" not in s]
    assert sentences  # the help does say what dispersion is
    for sentence in sentences:  # each names the unseen 9-10 (responses in no pair), or says what is *not* dispersion
        assert "9–10" in sentence or "no pair" in sentence or "not dispersion" in sentence, sentence
    assert any("not dispersion" in sentence and "other prompts' chosen" in sentence for sentence in sentences)


def test_sweep_writes_metrics_summary_figures_and_table(tmp_path):
    out = tmp_path / "toy"
    result = run("--sweep", "--seeds", "1", "--losses", "dpo,flex", "--steps", "30", "--sft-steps", "100", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # stdout carries only JSONL; the table goes to stderr
    for header in ("scen", "peak@step", "oth-ch", "unseen 9–10", "|g2/g1|"):
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
        (("--scenario", "1", "--lr", "0.3", "--max-steps", "200"), "underflowed"),
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
    result = run("--sweep", "--seeds", "1", "--losses", "all", "--steps", "6", "--sft-steps", "10", "--out", str(out), "--workers", "2")
    assert result.exit_code == 0, result.output
    table = (out / "sweep.md").read_text()
    first, by_loss, mass = table.split("\n\n")
    lines = first.splitlines()
    assert "chosen peak (step)" in lines[0] and "own-ch / rej 5–8 / oth-ch / unseen 9–10" in lines[0]
    assert "dispers" not in first
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
    result = run("--loss", "dpo", "--loss-arg", "alpha=0.5", "--max-steps", "3", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "loss 'dpo' has no option 'alpha'; it takes: beta" in " ".join(result.stderr.split())


def test_sweep_runs_5_seeds_by_default_and_reports_mean_and_sd(tmp_path):
    out = tmp_path / "seeds"
    result = run("--sweep", "--scenario", "1", "--losses", "dpo", "--steps", "4", "--sft-steps", "10", "--no-figures", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "seeds.json").read_text())
    assert record["seeds"] == [0, 1, 2, 3, 4] and record["sd_ddof"] == 1
    assert sorted(p.name for p in out.iterdir()) == [f"seed-{k}" for k in range(5)] + ["seeds.json", "sweep.md"]
    for k in range(5):
        summary = json.loads((out / f"seed-{k}" / "summary.json").read_text())
        assert summary["config"]["seed"] == k
    (group,) = record["aggregate"]
    finals = [row["final_chosen"] for row in record["per_seed"]]
    assert group["final_chosen"]["values"] == finals and len(set(finals)) == 5
    assert "over 5 seeds (0, 1, 2, 3, 4)" in (out / "sweep.md").read_text()
    assert "±" in result.stderr


def test_several_seeds_draw_the_band_figure(tmp_path):
    out = tmp_path / "band"
    args = ("--scenario", "1,4", "--seeds", "2", "--seed", "3", "--steps", "5", "--sft-steps", "10", "--out", str(out))
    result = run("--sweep", "--losses", "dpo,flex", *args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "seeds.json").read_text())["seeds"] == [3, 4]
    for name in ("sweep.png", "landscape.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_ablation_command(tmp_path):
    out = tmp_path / "ablation"
    result = run("--ablation", "--scenario", "3", "--seeds", "2", "--steps", "20", "--sft-steps", "30", "--out", str(out))
    assert result.exit_code == 0, result.output
    table = (out / "ablation.md").read_text()
    for variant in ("default", "alone", "tabular", "sgd"):
        assert f"| 3 | {variant} |" in table
    assert "over 2 seeds (0, 1)" in table and "post-peak fall" in table
    record = json.loads((out / "ablation.json").read_text())
    assert len(record["per_seed"]) == 2 * 4 and record["config"]["sgd_lr"] == 1.0
    assert (out / "ablation.png").read_bytes()[:8] == PNG
    result = run("--ablation", "--sweep", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "--ablation trains DPO only" in result.stderr


def test_landscape_leaves_out_losses_that_read_more_than_x1_and_x2(tmp_path):
    from dpo3d.toy.landscape import plot_landscapes

    # wpo needs per-token weights the (x1, x2) plane does not fix: it used to fail the whole sweep's figures
    assert plot_landscapes(["dpo", "wpo"], tmp_path / "l.png").stat().st_size > 10_000
    assert plot_landscapes(["wpo"], tmp_path / "only.png").is_file()
