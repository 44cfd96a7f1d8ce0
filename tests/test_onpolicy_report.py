"""scripts/onpolicy_report.py on a hand-made run folder: the sample accuracy of every round after the first,
the starting policy (the offline arm's samples of the same prompts) against each iterate arm's previous model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "onpolicy_report.py"


def load_script():
    spec = importlib.util.spec_from_file_location("onpolicy_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def judged(path: Path, scores: dict[str, list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": prompt, "score": score}) + "\n"
                            for prompt, values in scores.items() for score in values))


def test_each_later_round_compares_the_starting_policy_with_the_previous_rounds_model(tmp_path):
    report = load_script()
    seed = tmp_path / "seed-0"
    # the offline arm sampled every prompt from the starting policy: q1, q2 (round 2's), q3 (round 3's)
    judged(seed / "offline" / "judged.jsonl", {"q0": [1, 0], "q1": [1, 0], "q2": [0, 0], "q3": [1, 1]})
    judged(seed / "iterate" / "round-1" / "judged.jsonl", {"q0": [1, 0]})
    judged(seed / "iterate" / "round-2" / "judged.jsonl", {"q1": [1, 1], "q2": [1, 0]})
    judged(seed / "iterate" / "round-3" / "judged.jsonl", {"q3": [0, 1]})
    judged(seed / "tr-dpo" / "round-2" / "judged.jsonl", {"q1": [0, 0], "q2": [0, 0]})
    blocks = report.later_blocks(seed)
    # round 2: the start had 1 of 4 right on q1, q2; iterate's round-1 model 3 of 4; TR-DPO's 0 of 4
    assert blocks[2] == {"start": (1, 4), "iterate": (3, 4), "tr-dpo": (0, 4)}
    # round 3: q3 only; the TR-DPO arm has no round 3
    assert blocks[3] == {"start": (2, 2), "iterate": (1, 2)}
    assert sorted(blocks) == [2, 3]


def test_a_seed_without_the_offline_samples_has_no_blocks(tmp_path):
    report = load_script()
    judged(tmp_path / "seed-0" / "iterate" / "round-2" / "judged.jsonl", {"q1": [1]})
    assert report.later_blocks(tmp_path / "seed-0") == {}


def test_the_markdown_has_a_row_per_later_round_and_sampler(tmp_path, capsys):
    report = load_script()
    seed = tmp_path / "seed-0"
    judged(seed / "offline" / "judged.jsonl", {"q1": [1, 0], "q2": [0, 0]})
    judged(seed / "iterate" / "round-2" / "judged.jsonl", {"q1": [1, 1]})
    judged(seed / "iterate" / "round-3" / "judged.jsonl", {"q2": [1, 0]})
    report.main(tmp_path)
    assert "cosine" not in (tmp_path / "compare.md").read_text()  # an arm no seed ran gets no row
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line.split("|")[4].strip()
            for line in (tmp_path / "compare.md").read_text().splitlines() if line.startswith("| 2 |") or line.startswith("| 3 |")}
    # round 2 (q1): the start 1 of 2 right, iterate's round-1 model 2 of 2; round 3 (q2): 0 of 2 and 1 of 2
    assert rows == {("2", "the starting policy"): "1/2", ("2", "iterate's round-1 model"): "2/2",
                    ("2", "iterate + TR-DPO's round-1 model"): "",
                    ("3", "the starting policy"): "0/2", ("3", "iterate's round-2 model"): "1/2",
                    ("3", "iterate + TR-DPO's round-2 model"): ""}
