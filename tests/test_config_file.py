"""One config per run: `--config` gives any flag, the command line wins, run_config.json replays a run."""

from __future__ import annotations

import json

from dpo3d.data.run_log import read_log
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig

from .test_cli_train import comparable, dpo3d
from .test_train_dpo import write_pairs


def timeless(path) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "elapsed_s"} for record in comparable(path)]


def test_run_config_json_given_back_as_config_reproduces_the_run(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    first = dpo3d("train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--out", str(tmp_path / "a"),
                  "--lr", "5e-3", "--batch-size", "2", "--grad-accum", "1", "--max-steps", "3", "--loss", "ipo",
                  "--schedule", "constant", "--seed", "3", "--unseen", "0", "--no-probe-greedy", "--probe-samples", "0")
    assert first.returncode == 0, first.stderr
    recorded = json.loads((tmp_path / "a" / "run_config.json").read_text())["invocation"]
    assert recorded["command"] == "train-dpo"
    assert recorded["options"]["lr"] == 5e-3 and recorded["options"]["loss"] == "ipo" and recorded["options"]["seed"] == 3
    assert "out" not in recorded["options"] and "resume" not in recorded["options"]

    again = dpo3d("train-dpo", "--config", str(tmp_path / "a" / "run_config.json"), "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert timeless(tmp_path / "b" / "metrics.jsonl") == timeless(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in read_log(tmp_path / "b" / "metrics.jsonl")] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "b" / "run_config.json").read_text())["invocation"] == recorded


def test_a_toml_file_sets_options_and_the_command_line_overrides_it(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    (tmp_path / "run.toml").write_text(
        f'pairs = "{pairs}"\nmodel = "{tiny_model_dir}"\nlr = 0.004\nbatch-size = 2\ngrad_accum = 1\nmax-steps = 3\nunseen = 0\n'
    )
    result = dpo3d("train-dpo", "--config", str(tmp_path / "run.toml"), "--max-steps", "1", "--out", str(tmp_path / "t"))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "t" / "run_config.json").read_text())
    assert (config["lr"], config["batch_size"], config["grad_accum"], config["max_steps"]) == (0.004, 2, 1, 1)
    assert config["schedule"] == LoopConfig.schedule  # untouched options keep their one default


def test_yaml_works_and_an_unknown_option_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("lr: 0.001\nlearning_rate: 0.1\n")
    result = dpo3d("train-dpo", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "'learning_rate' is not an option of this command" in " ".join(result.stderr.split())
    (tmp_path / "broken.toml").write_text("lr = = 1\n")
    result = dpo3d("sft", "--config", str(tmp_path / "broken.toml"), "--out", str(tmp_path / "y"))
    assert result.returncode == 2 and "cannot parse it" in result.stderr


def test_the_cli_reads_its_defaults_from_the_library_configs():
    import inspect

    from dpo3d_cli import train_dpo

    params = inspect.signature(train_dpo.command).parameters
    assert params["eval_every"].default.default == DPORunConfig.eval_every == 10
    assert params["lr"].default.default == LoopConfig.lr and params["probe_size"].default.default == DPORunConfig.probe_size
