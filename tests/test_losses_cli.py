"""The loss options of `train-dpo` through the command layer: --list-losses alone, --loss-arg, mixtures."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dpo3d.losses import LOSSES
from dpo3d_cli.app import app

runner = CliRunner()


def test_the_readme_line_lists_every_loss_without_any_other_option():
    # README: `dpo3d train-dpo --list-losses` (it used to fail with "Missing option '--out'")
    result = runner.invoke(app, ["train-dpo", "--list-losses"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert f"{len(LOSSES)} losses" in text and len(LOSSES) >= 28
    for name, spec in LOSSES.items():
        assert f"{name} ({spec.log_probs} log-probs" in text, name
        for key, value in spec.defaults.items():
            assert f"{key}={value}" in text, (name, key)
    # the clear line for Balanced-DPO: named, and said to be absent, with the reason
    assert "balanced-dpo NOT IMPLEMENTED" in text and "2502.20847" in text
    assert "flex (sum log-probs) options: beta_chosen=0.1, beta_rejected=0.05" in text


def test_loss_arg_reaches_the_loss_and_bad_ones_are_one_line(tmp_path, tiny_model_dir):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No, never {i}."}) + "\n" for i in range(4)
    ))  # fmt: skip
    base = ["train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--max-steps", "1",
            "--batch-size", "2", "--grad-accum", "1", "--probe-size", "2"]  # fmt: skip
    out = tmp_path / "bpo"
    result = runner.invoke(app, [*base, "--out", str(out), "--loss", "bpo", "--beta", "0.2", "--loss-arg", "alpha=0.5"])
    assert result.exit_code == 0, result.output
    extra = json.loads((out / "run_config.json").read_text())["extra"]
    assert extra["loss"] == "bpo" and extra["hyperparameters"] == {"beta": 0.2, "alpha": 0.5}
    # a mixture with a per-part option
    out = tmp_path / "mix"
    result = runner.invoke(app, [*base, "--out", str(out), "--loss", "dpo:0.8,bco:0.2,sft:1.0", "--loss-arg", "bco.beta=0.3"])
    assert result.exit_code == 0, result.output
    extra = json.loads((out / "run_config.json").read_text())["extra"]
    assert extra["loss"] == "dpo:0.8,bco:0.2,sft:1" and extra["hyperparameters"] == {"bco.beta": 0.3}
    for args, message in [
        (["--loss", "bpo", "--loss-arg", "gamma=1"], "loss 'bpo' has no option 'gamma'; it takes: beta, alpha"),
        (["--loss", "bpo", "--loss-arg", "alpha"], "write name=value"),
        (["--loss", "adadpo", "--loss-arg", "use_reference=maybe"], "expected true or false"),
        (["--loss", "balanced-dpo"], "not implemented"),
        (["--loss", "dpo:0.5,nope:1"], "unknown loss 'nope'"),
    ]:
        result = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def _pairs_and_base(tmp_path, tiny_model_dir) -> list[str]:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No, never {i}."}) + "\n" for i in range(4)
    ))  # fmt: skip
    return ["train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--max-steps", "2", "--lr", "5e-3",
            "--batch-size", "2", "--grad-accum", "1", "--probe-size", "2", "--no-probe-greedy", "--probe-samples", "0",
            "--device", "cpu"]  # fmt: skip


def _metrics(out) -> list[dict]:
    from dpo3d.data.run_log import read_log

    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "examples_per_s")} for r in read_log(out / "metrics.jsonl")]


def test_an_old_per_loss_flag_is_the_loss_arg_of_its_name_with_a_warning(tmp_path, tiny_model_dir):
    base = _pairs_and_base(tmp_path, tiny_model_dir)
    new = runner.invoke(app, [*base, "--out", str(tmp_path / "new"), "--loss", "ipo", "--loss-arg", "beta=0.2"])
    old = runner.invoke(app, [*base, "--out", str(tmp_path / "old"), "--loss", "ipo", "--beta", "0.2"])
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert "deprecated" not in new.stderr
    assert "--beta is deprecated and goes in the next release; use --loss-arg beta=0.2" in " ".join(old.stderr.split())
    configs = [json.loads((tmp_path / name / "run_config.json").read_text()) for name in ("new", "old")]
    assert [c["extra"]["hyperparameters"] for c in configs] == [{"beta": 0.2}, {"beta": 0.2}]
    # the old flag is recorded as --loss-arg: a replay of the new file warns no more
    assert [c["invocation"]["options"]["loss_args"] for c in configs] == [["beta=0.2"], ["beta=0.2"]]
    assert configs[1]["invocation"]["options"]["beta"] is None
    assert _metrics(tmp_path / "old") == _metrics(tmp_path / "new")
    again = runner.invoke(app, ["train-dpo", "--config", str(tmp_path / "old" / "run_config.json"), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0 and "deprecated" not in again.stderr, again.output
    assert _metrics(tmp_path / "again") == _metrics(tmp_path / "old")
    # as before, an old flag the loss does not take is a warning, not an error; the same with --loss-arg is an error
    unused = runner.invoke(app, [*base, "--out", str(tmp_path / "unused"), "--loss", "ipo", "--beta-chosen", "0.3"])
    assert unused.exit_code == 0, unused.output
    assert "--beta-chosen is used by none of: ipo" in unused.stderr
    twice = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--beta", "0.2", "--loss-arg", "beta=0.3"])
    assert twice.exit_code == 2 and "'beta' given twice" in twice.output
    # the old flags are hidden from --help, which says where each loss's options are
    help_text = " ".join(runner.invoke(app, ["train-dpo", "--help"]).output.split())
    assert "--loss-arg" in help_text and "--list-losses" in help_text and "--beta-chosen" not in help_text


def test_a_run_config_json_of_an_earlier_release_still_replays(tmp_path, tiny_model_dir):
    # written by hand the way runs before --loss-arg recorded their options: every per-loss flag a field
    base = _pairs_and_base(tmp_path, tiny_model_dir)
    options = {"pairs": base[2], "model": base[4], "max_steps": 2, "lr": 5e-3, "batch_size": 2, "grad_accum": 1,
               "probe_size": 2, "probe_greedy": False, "probe_samples": 0, "device": "cpu", "loss": "flex",
               "beta": None, "beta_chosen": 0.2, "beta_rejected": 0.03, "sft_weight": None, "label_smoothing": None,
               "gamma": None, "dpop_lambda": None, "delta": None, "loss_args": None, "list_losses": False}  # fmt: skip
    old = tmp_path / "old_run_config.json"
    old.write_text(json.dumps({"steps": 2, "extra": {"loss": "flex", "hyperparameters": {"beta_chosen": 0.2, "beta_rejected": 0.03}},
                               "invocation": {"command": "train-dpo", "options": options}}))  # fmt: skip
    replay = runner.invoke(app, ["train-dpo", "--config", str(old), "--out", str(tmp_path / "replay")])
    assert replay.exit_code == 0, replay.output
    assert "--beta-chosen is deprecated" in replay.stderr and "--beta-rejected is deprecated" in replay.stderr
    config = json.loads((tmp_path / "replay" / "run_config.json").read_text())
    assert config["extra"]["loss"] == "flex"
    assert config["extra"]["hyperparameters"] == {"beta_chosen": 0.2, "beta_rejected": 0.03}
    # the same run written today
    today = runner.invoke(app, [*base, "--out", str(tmp_path / "today"), "--loss", "flex",
                                "--loss-arg", "beta_chosen=0.2", "--loss-arg", "beta_rejected=0.03"])  # fmt: skip
    assert today.exit_code == 0, today.output
    assert _metrics(tmp_path / "replay") == _metrics(tmp_path / "today")
