"""The study's fair comparison, without running a study: Wilson intervals worked by hand, the passes each
scenario makes over its pairs and the warning when they differ, the out-of-domain set's prompts and fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo3d.judges.intervals import interval_text, wilson, wilson_json
from dpo3d.study import StudyConfig
from dpo3d.study.config import Layout
from dpo3d.study.fairness import passes_over_pairs, planned_passes, uneven_passes, warn_uneven_passes

from .test_study import Recorder, tiny_config, write_prompts


def test_wilson_interval_worked_by_hand():
    # 3 right of 20, z = 1.959964 (z² = 3.841459): p = 0.15, z²/n = 0.192073, so the centre is
    # (0.15 + 0.096036) / 1.192073 = 0.206394 and the half-width is
    # z / 1.192073 · sqrt(0.15·0.85/20 + 3.841459/1600) = 1.644164 · sqrt(0.006375 + 0.002401) = 0.154025:
    # [0.052369, 0.360419]; the normal approximation's 0.15 ± 0.1565 would start below 0
    low, high = wilson(3, 20)
    assert round(low, 3) == 0.052 and round(high, 3) == 0.360
    # none right of 20: the interval starts at 0 exactly and ends at (z²/n) / (1 + z²/n) = 0.192073 / 1.192073 = 0.161125
    low, high = wilson(0, 20)
    assert low == 0.0 and round(high, 3) == 0.161
    # all right: the mirror image
    low, high = wilson(20, 20)
    assert round(low, 3) == 0.839 and high == 1.0
    # 1 of 8: centre (0.125 + 0.240091) / 1.480182 = 0.246653, half-width 1.324137 · sqrt(0.013672 + 0.015006)
    # = 0.224235: [0.022417, 0.470888]
    low, high = wilson(1, 8)
    assert round(low, 3) == 0.022 and round(high, 3) == 0.471
    assert wilson(0, 0) is None
    # the form JSON stores: a list (3/20 as above), None with no answers
    assert wilson_json(3, 20) == pytest.approx([0.052369, 0.360419], abs=1e-6) and wilson_json(0, 0) is None
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_an_accuracy_reads_with_its_interval():
    assert interval_text(0.15, wilson(3, 20)) == "15.0% [5.2, 36.0]"
    assert interval_text(None, None) == "—"


def test_passes_over_the_pairs():
    # 8 updates of 4 pairs x 1 micro-batch x 1 process over 10 pairs: 3.2 passes; over 30: 1.07
    assert passes_over_pairs(updates=8, global_batch=4, pairs=10) == pytest.approx(3.2)
    assert passes_over_pairs(updates=8, global_batch=4, pairs=30) == pytest.approx(32 / 30)
    assert passes_over_pairs(updates=8, global_batch=4, pairs=0) is None
    # the README study's --all-prompts: scenarios 1 and 3 on 10 pairs, 2 and 4 on 30
    config = StudyConfig(out=Path("s"), model="m", same_prompts=False)
    config.loop.max_steps, config.loop.batch_size, config.loop.grad_accum = 8, 4, 1
    passes = planned_passes(config, {1: 10, 2: 30, 3: 10, 4: 30}, processes=1)
    assert passes == pytest.approx({1: 3.2, 2: 32 / 30, 3: 3.2, 4: 32 / 30})
    # grad_accum and processes multiply the pairs each update sees
    config.loop.grad_accum = 2
    assert planned_passes(config, {1: 10}, processes=2)[1] == pytest.approx(8 * 4 * 2 * 2 / 10)


def test_passes_more_than_ten_percent_apart_are_named():
    message = uneven_passes({1: 3.2, 2: 32 / 30, 3: 3.2, 4: 32 / 30})
    assert message is not None
    assert "scenario 1 3.20" in message and "scenario 2 1.07" in message and "scenario 4 1.07" in message
    assert "--same-prompts" in message
    assert uneven_passes({1: 1.0, 2: 1.1, 3: 1.05}) is None  # 1.1 / 1.0 is 10% apart, not more
    assert uneven_passes({1: 1.0, 2: 1.11}) is not None
    assert uneven_passes({1: 2.0}) is None


def test_the_study_warns_of_uneven_passes_through_its_events(tmp_path):
    layout = Layout(tmp_path)
    layout.data.mkdir()
    for scenario, count in ((1, 3), (2, 6)):
        layout.pairs(scenario, "train").write_text("".join(json.dumps({"id": f"q{i}"}) + "\n" for i in range(count)))
    config = StudyConfig(out=tmp_path, model="m", scenarios=(1, 2), same_prompts=False)
    config.loop.max_steps, config.loop.batch_size = 3, 2
    said: list[str] = []
    events = Recorder()
    events.on_status = said.append
    # 3 updates of 2 pairs: 2.0 passes over 3 pairs, 1.0 over 6
    assert warn_uneven_passes(config, layout, events) == pytest.approx({1: 2.0, 2: 1.0})
    assert len(said) == 1 and "scenario 1 2.00" in said[0] and "scenario 2 1.00" in said[0]
    # the same pairs in both: nothing said
    layout.pairs(2, "train").write_text(layout.pairs(1, "train").read_text())
    said.clear()
    warn_uneven_passes(config, layout, events)
    assert said == []


def test_ood_prompts_leave_out_the_training_ones(tmp_path, tiny_model_dir):
    from dpo3d.study.data import load_study_prompts

    train = str(write_prompts(tmp_path / "train.jsonl", 6))
    ood = str(write_prompts(tmp_path / "svamp_like.jsonl", 6, offset=4))  # q4 and q5 are training prompts
    config = tiny_config(tmp_path, tiny_model_dir, "x", train_prompts=train, train_limit=6, ood_test_prompts=ood,
                         ood_test_limit=3)
    assert [r["id"] for r in load_study_prompts(config, "ood")] == ["q6", "q7", "q8"]
    assert [r["id"] for r in load_study_prompts(config, "test")] == ["q100", "q101", "q102"]


def test_the_ood_set_enters_the_fingerprint_only_when_given():
    plain = StudyConfig(out=Path("s"), model="m").fingerprint_fields()
    assert not any(key.startswith("ood_") for key in plain)  # a study folder from before it keeps its fingerprint
    given = StudyConfig(out=Path("s"), model="m", ood_test_prompts="svamp", ood_test_limit=20).fingerprint_fields()
    assert given == {**plain, "ood_test_prompts": "svamp", "ood_test_limit": 20}


def test_the_ood_set_goes_with_the_math_task():
    with pytest.raises(ValueError, match="--ood-test-prompts"):
        StudyConfig(out=Path("s"), model="m", task="poem", ood_test_prompts="svamp").validate()


def test_a_weak_model_samples_at_the_policys_temperature_and_the_stand_in_hot():
    # the stand-in is the policy sampled hot; a weaker model answers as it would (the paper's Table 1 source),
    # not at the stand-in's 1.2, which turned a 0.45-nat/token source into a 5-nat one
    stand_in = StudyConfig(out=Path("s"), model="m", temperature=0.7)
    weak = StudyConfig(out=Path("s"), model="m", temperature=0.7, weak_model="runs/sft")
    given = StudyConfig(out=Path("s"), model="m", temperature=0.7, weak_model="runs/sft", weak_temperature=1.0)
    assert (stand_in.off_policy_temperature, weak.off_policy_temperature, given.off_policy_temperature) == (1.2, 0.7, 1.0)
    # folders record the temperature as a number, as they did before it could be left out
    assert stand_in.fingerprint_fields()["weak_temperature"] == 1.2
    assert weak.fingerprint_fields()["weak_temperature"] == 0.7
    assert "at temperature 0.7" in weak.weak_label and "stand-in" in stand_in.weak_label
