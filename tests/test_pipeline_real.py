"""The preference-data pipeline as a user runs it: a real shell pipeline on the real model.

    dpo3d sample --prompts gsm8k:test --limit 3 -n 4 | dpo3d judge math | dpo3d build-pairs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DPO3D = str(Path(sys.executable).with_name("dpo3d"))


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DPO3D_TEST": "1"}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_sample_judge_build_pairs_chain_on_the_real_model(tmp_path):
    result = shell(
        f"{DPO3D} sample --prompts gsm8k:test --limit 3 -n 4 --max-new-tokens 96 --seed 0 "
        f"| tee judged_in.jsonl | {DPO3D} judge math --workers 1 | tee judged.jsonl "
        f"| {DPO3D} build-pairs > pairs.jsonl",
        tmp_path,
    )
    candidates = jsonl(tmp_path / "judged.jsonl")
    right_and_wrong = {c["id"] for c in candidates if c["score"] == 1} & {c["id"] for c in candidates if c["score"] == 0}
    if right_and_wrong:
        assert result.returncode == 0, result.stderr[-2000:]
    else:  # no prompt with both a right and a wrong candidate: build-pairs says so and fails the pipeline
        assert result.returncode == 1 and "no pairs written" in result.stderr, result.stderr[-2000:]
    assert len(candidates) == 12
    assert {c["id"] for c in candidates} == {"gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"}
    assert all(c["judge"] == "math" and c["score"] in (0, 1) for c in candidates)
    # the stats line reaches stderr; stdout (the file) holds only pairs
    assert "groups" in result.stderr
    policy_pairs = jsonl(tmp_path / "pairs.jsonl")
    assert {p["id"] for p in policy_pairs} == right_and_wrong
    for pair in policy_pairs:  # only prompts with both a right and a wrong candidate make a pair
        assert pair["chosen_score"] == 1 and pair["rejected_score"] == 0
        assert len(pair["unseen"]) == 2

    # scenario 2 from the same judged file: the dataset's solution as chosen, always a pair
    result = shell(
        f"{DPO3D} build-pairs judged.jsonl --chosen-from reference --rejected-from smollm2-135m-instruct "
        f"-o scenario2.jsonl",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scenario2 = jsonl(tmp_path / "scenario2.jsonl")
    wrong_somewhere = {c["id"] for c in candidates if c["score"] == 0}
    assert {p["id"] for p in scenario2} == wrong_somewhere
    assert all(p["chosen_source"] == "reference" for p in scenario2)
