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
