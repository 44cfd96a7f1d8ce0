"""`ppo --max-steps` like the other trainers, and `--gae-gamma` apart from train-dpo's SimPO `--gamma`;
the old spellings still work, with a note."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ppo(tmp_path, model_dir, name: str, *names: str) -> tuple[subprocess.CompletedProcess, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Question 1?"}\n{"prompt": "Question 2?"}\n')
    out = tmp_path / name
    result = subprocess.run(
        [sys.executable, "-m", "dpo3d", "ppo", "--prompts", str(prompts), "--reward", "contains:yes", "--model", str(model_dir),
         "--out", str(out), "--rollout-batch", "2", "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "3", *names],
        capture_output=True, text=True, cwd=ROOT,
    )
    return result, out


def test_max_steps_and_gae_gamma_and_their_old_names(tmp_path, tiny_model_dir):
    new, out_new = ppo(tmp_path, tiny_model_dir, "new", "--max-steps", "2", "--gae-gamma", "0.9")
    old, out_old = ppo(tmp_path, tiny_model_dir, "old", "--steps", "2", "--gamma", "0.9")
    assert new.returncode == 0 and old.returncode == 0, (new.stderr[-2000:], old.stderr[-2000:])
    assert "deprecated" not in new.stderr
    assert "--steps is deprecated; it is now --max-steps" in old.stderr and "--gamma is deprecated" in old.stderr
    for out in (out_new, out_old):
        config = json.loads((out / "run_config.json").read_text())
        assert (config["max_steps"], config["gae_gamma"]) == (2, 0.9)
        assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
