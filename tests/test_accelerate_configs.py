"""The example launcher configs (configs/accelerate) load with accelerate's own config loader, and the DDP one
launches a real 2-process run (gloo on CPU) whose bf16 mixed precision reaches the trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpo3d.data.run_log import read_log

from .launching import port_args

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
LAUNCHER = Path(sys.executable).parent / "accelerate"
EXPECTED = {"ddp": ("MULTI_GPU", None), "fsdp": ("FSDP", "fsdp_version"), "deepspeed_zero2": ("DEEPSPEED", "zero_stage"),
            "deepspeed_zero3": ("DEEPSPEED", "zero_stage")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_loader(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    kind, key = EXPECTED[name]
    assert str(config.distributed_type).endswith(kind) and config.mixed_precision == "bf16"
    if kind == "FSDP":
        assert config.fsdp_config[key] == 2
    if kind == "DEEPSPEED":
        assert config.deepspeed_config[key] == int(name[-1])
    if name == "deepspeed_zero3":  # accelerate's get_state_dict gathers ZeRO-3 weights only with this on
        assert config.deepspeed_config["zero3_save_16bit_model"] is True


def test_slurm_script_is_valid_bash_and_launches_with_a_shipped_config():
    script = ROOT / "configs" / "slurm" / "train_dpo.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "configs/accelerate/ddp.yaml" in text and "--machine_rank \\$SLURM_NODEID" in text


@pytest.mark.skipif(not LAUNCHER.exists(), reason="accelerate CLI")
def test_ddp_config_launches_two_processes_with_bf16(tmp_path, tiny_model_dir):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Blue {i}.", "rejected": f"No {i}, never."})
                             + "\n" for i in range(4)))
    result = subprocess.run(
        [str(LAUNCHER), "launch", *port_args(), "--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes", "2", "-m", "dpo3d",
         "train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
         "--max-steps", "1", "--batch-size", "2", "--grad-accum", "1", "--probe-size", "2", "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert run_config["processes"] == 2 and run_config["mixed_precision"] == "bf16"  # from the config file
    assert [r["step"] for r in read_log(tmp_path / "run" / "metrics.jsonl")] == [0, 1]
