"""`dpo3d study` on a tiny model with tiny sizes: every table filled, reruns skip, a killed study resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from dpo3d.data.records import read_records
from dpo3d.data.run_log import read_log
from dpo3d.judges import scored
from dpo3d.judges.base import Judge
from dpo3d.judges.intervals import interval_text, wilson
from dpo3d.study import StudyConfig, StudyEvents, run_study
from dpo3d.study.config import SCENARIOS, study_loop
from dpo3d.study.tables import share_text
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch.probe_responses import ProbeResponseConfig

from .launching import port_args

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = Path(sys.executable).parent / "accelerate"

LOSSES = ("dpo", "ipo")


class ParityJudge(Judge):
    """A deterministic stand-in for math-verify (a random tiny model never writes a right answer):
    a completion is "right" when its length in characters is even. It reads the text, so a
    trained model's answers are judged on what it wrote."""

    name = "parity"

    def judge(self, records: Iterable[Mapping], on_progress=None) -> Iterator[dict]:
        for record in records:
            right = len(record["completion"]) % 2 == 0
            out = scored(record, self.name, 1.0 if right else 0.0, {"status": "correct" if right else "wrong"})
            out["correct"] = right
            yield out


def parity(config, size_hint):
    return ParityJudge()


def write_prompts(path: Path, n: int, offset: int = 0) -> Path:
    rows = [
        {
            "id": f"q{offset + i}",
            "prompt": [{"role": "user", "content": f"What is {offset + i} plus {i + 3}?"}],
            "reference": f"We add: {offset + i} + {i + 3} = \\boxed{{{offset + 2 * i + 3}}}.",
            "answer": str(offset + 2 * i + 3),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tmp_path: Path, model_dir, out: str, **changes) -> StudyConfig:
    settings = dict(
        out=tmp_path / out, model=str(model_dir),
        train_prompts=str(write_prompts(tmp_path / "train.jsonl", 8)),
        test_prompts=str(write_prompts(tmp_path / "test.jsonl", 3, offset=100)),
        ood_test_prompts=str(write_prompts(tmp_path / "ood.jsonl", 4, offset=200)), ood_test_limit=2,
        train_limit=8, test_limit=3, losses=LOSSES, n=4, max_new_tokens=6, sample_batch_size=16,
        heldout_share=0.3, steps=2, batch_size=2, lr=5e-3, log_every=1, eval_every=1, save_every=0,
        probe_size=4, unseen_limit=8, max_length=96, eval_max_new_tokens=6, eval_batch_size=8, cpu=True, device="cpu",
        probe_responses=ProbeResponseConfig(max_new_tokens=6),  # squeezing probes of a few tokens: fast, still there
    )
    settings.update(changes)
    return study_config(**settings)


def study_config(**settings) -> StudyConfig:
    """A StudyConfig from one flat table: the loop's settings (``steps``: max_steps) go to its loop section."""
    loop = {("max_steps" if key == "steps" else key): settings.pop(key)
            for key in ("steps", "batch_size", "lr", "log_every", "save_every", "cpu", "grad_accum", "seed")
            if key in settings}
    return StudyConfig(**settings, loop=study_loop(**loop))


class Recorder(StudyEvents):
    def __init__(self, kill_at: tuple[str, int] | None = None):
        super().__init__()
        self.started: list[str] = []
        self.skipped: list[str] = []
        self.done: dict[str, dict] = {}
        self.on_stage = lambda name, what: self.started.append(name)
        self.on_skip = lambda name, why: self.skipped.append(name)
        self.on_done = lambda name, cost: self.done.__setitem__(name, cost)
        self.kill_at = kill_at
        self.training = self._training

    def _training(self, label: str) -> LoopCallbacks:
        def saved(step: int, path) -> None:
            if self.kill_at == (label, step):
                raise KeyboardInterrupt(f"killed {label} after step {step}")

        return LoopCallbacks(on_save=saved)


TABLES = ("table1", "table2", "table10", "events", "fig4", "sources", "data")


def tables_of(study: dict) -> dict:
    return {key: study[key] for key in TABLES}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("study")
    config = tiny_config(tmp, tiny_model_dir, "whole")
    events = Recorder()
    study = run_study(config, events, judge_factory=parity)
    return tmp, config, study, events


def test_every_table_is_filled(finished):
    tmp, config, study, _ = finished
    out = config.out
    cells = [f"s{s}-{loss}" for loss in LOSSES for s in SCENARIOS]
    # Table 1: every scenario x loss has its before and after per-token log-probs; training moved them
    assert [(r["scenario"], r["loss"]) for r in study["table1"]] == [(s, loss) for s in SCENARIOS for loss in LOSSES]
    for row in study["table1"]:
        for key in ("chosen_before", "chosen_after", "rejected_before", "rejected_after"):
            assert isinstance(row[key], float) and row[key] < 0, (row, key)
        assert row["rejected_after"] != row["rejected_before"]
        assert row["pairs"] >= 1
    # the before values are the start's, the same for both losses of a scenario
    by_scenario = {}
    for row in study["table1"]:
        by_scenario.setdefault(row["scenario"], set()).add(row["chosen_before"])
    assert all(len(v) == 1 for v in by_scenario.values())
    # every cell made its 2 updates of 2 pairs over its scenario's training pairs; the same prompts in every
    # scenario (same_prompts), so the same pairs and passes
    for row in study["table1"]:
        assert row["updates"] == 2 and row["passes"] == pytest.approx(2 * 2 / row["pairs"])
        assert study["cells"][f"s{row['scenario']}-{row['loss']}"]["training"]["global_batch"] == 2
    assert len({row["pairs"] for row in study["table1"]}) == 1 and len({row["passes"] for row in study["table1"]}) == 1
    # Table 2: the start and every cell, accuracy over the 3 test prompts and the 2 out-of-domain ones, each
    # with its Wilson interval
    assert [r["model"] for r in study["table2"]] == ["start", *cells]
    for row in study["table2"]:
        assert row["answers"] == 3 and 0 <= row["correct"] <= 3
        assert row["accuracy"] == pytest.approx(row["correct"] / 3)
        assert row["interval"] == list(wilson(row["correct"], 3))
        assert row["ood_answers"] == 2 and row["ood_accuracy"] == pytest.approx(row["ood_correct"] / 2)
        assert row["ood_interval"] == list(wilson(row["ood_correct"], 2))
    assert study["data"]["ood_test_prompts"] == 2
    # the accuracies are the judge's verdicts on what each model wrote, on each test set
    answers = read_records(out / "eval" / "s1-dpo.jsonl")
    assert sum(len(a["completion"]) % 2 == 0 for a in answers) == study["table2"][1]["correct"]
    ood_answers = read_records(out / "eval" / "ood" / "s1-dpo.jsonl")
    assert sorted(a["id"] for a in ood_answers) == ["q200", "q201"]
    assert sum(len(a["completion"]) % 2 == 0 for a in ood_answers) == study["table2"][1]["ood_correct"]
    # Table 10: losses x scenarios, the same numbers as Table 2
    t10 = study["table10"]
    assert t10["columns"] == [f"scenario {s}" for s in SCENARIOS] and list(t10["rows"]) == list(LOSSES)
    t2 = {r["model"]: r["accuracy"] for r in study["table2"]}
    assert t10["rows"]["ipo"]["scenario 3"] == t2["s3-ipo"] and t10["start"] == t2["start"]
    rows2 = {r["model"]: r for r in study["table2"]}
    assert t10["intervals"]["dpo"]["scenario 2"] == rows2["s2-dpo"]["interval"]
    assert t10["start_interval"] == rows2["start"]["interval"]
    ood10 = t10["out_of_domain"]
    assert ood10["rows"]["ipo"]["scenario 4"] == rows2["s4-ipo"]["ood_accuracy"]
    assert ood10["intervals"]["ipo"]["scenario 4"] == rows2["s4-ipo"]["ood_interval"]
    assert ood10["start"] == rows2["start"]["ood_accuracy"]
    # detector events: one list per cell, as the cell's own summary.json holds them
    assert sorted(study["events"]) == sorted(cells)
    summary = json.loads((out / "cells" / "s2-dpo" / "summary.json").read_text())
    assert study["events"]["s2-dpo"] == summary["three_d_events"]
    # Fig. 4: the reward model and DPO, evaluated at steps 0..2 on scenario 1's held-out pairs
    assert set(study["fig4"]) == {"reward model", "DPO"}
    assert study["fig4"]["DPO"]["steps"] == [0, 1, 2]
    rm_metrics = read_log(out / "cells" / "s1-rm" / "metrics.jsonl")
    assert study["fig4"]["reward model"]["values"] == [r["eval_accuracy"] for r in rm_metrics if "eval_accuracy" in r]
    # the sources under the start policy (a random tiny model finds every text about equally unlikely,
    # so no ordering is asserted here; the README gives SmolLM2's)
    rows = {r["source"]: r for r in study["sources"]}
    assert set(rows) == {"policy", "weak", "reference"}
    assert rows["policy"]["responses"] == sum(1 for c in read_records(out / "data" / "judged_policy.jsonl") if c["completion"].strip())
    assert rows["reference"]["responses"] == 8 and rows["reference"]["right"] == 1.0
    assert all(r["per_token"] < 0 for r in rows.values())
    # every cell is an ordinary run folder; the figures and the Markdown are written
    for label in cells:
        folder = out / "cells" / label
        assert (folder / "model.safetensors").is_file() and (folder / "run_config.json").is_file()
        assert [r["step"] for r in read_log(folder / "metrics.jsonl")] == [0, 1, 2]
    for name in ("probes.png", "fig4.png", "study.md", "study.json"):
        assert (out / name).stat().st_size > 0
    text = (out / "study.md").read_text()
    assert "Table 1" in text and "Table 2" in text and "Table 10" in text and "| s4-ipo |" in text
    start = rows2["start"]
    assert f"| start | {interval_text(start['accuracy'], start['interval'])} ({start['correct']}/3) | " \
           f"{interval_text(start['ood_accuracy'], start['ood_interval'])} ({start['ood_correct']}/2) |" in text
    assert "| loss | scenario 1 in-domain | scenario 1 out-of-domain | scenario 2 in-domain |" in text
    assert json.loads((out / "study.json").read_text())["table10"] == study["table10"]


def test_stage_costs_are_reported(finished):
    _, _, study, events = finished
    for stage in ("sample-policy", "sample-weak", "judge-policy", "pairs", "train-s1-dpo", "train-s1-rm",
                  "eval-start", "eval-s4-ipo", "eval-ood-start", "eval-ood-s4-ipo"):
        assert stage in events.done and events.done[stage]["seconds"] >= 0, stage
    assert study["costs"]["sample-policy"]["new_tokens"] > 0
    assert study["costs"]["sample-policy"]["candidates"] == 8 * 4


def test_the_pairs_follow_the_scenarios_sources(finished):
    _, config, _, _ = finished
    expected = {1: ("policy", "policy"), 2: ("reference", "policy"), 3: ("policy", "weak"), 4: ("reference", "weak")}
    ids = None
    for scenario, (chosen, rejected) in expected.items():
        pairs = read_records(config.out / "data" / f"scenario{scenario}_train.jsonl")
        assert {(p["chosen_source"], p["rejected_source"]) for p in pairs} == {(chosen, rejected)}
        assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
        assert all(u["source"] == "policy" for p in pairs for u in p["unseen"])
        # the same prompts in every scenario (same_prompts), only the responses differ
        found = {p["id"] for p in pairs}
        assert ids is None or found == ids
        ids = found


def test_rerun_skips_every_finished_stage(finished, tiny_model_dir):
    tmp, config, study, _ = finished
    mtimes = {p: p.stat().st_mtime_ns for p in (config.out / "cells").glob("*/model.safetensors")}
    events = Recorder()
    again = run_study(config, events, judge_factory=parity)
    assert tables_of(again) == tables_of(study)
    assert not events.done  # nothing sampled, judged, trained or evaluated again
    assert {"sample-policy", "pairs", "eval-start", "eval-ood-start", "s1-dpo", "s4-ipo", "s1-rm"} <= set(events.skipped)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_the_ood_set_adds_an_evaluation_and_nothing_else(finished, tiny_model_dir):
    """The same study without its out-of-domain set: its data, cells and in-domain evaluations are the ones
    made with it (nothing sampled, trained or evaluated again), and its tables have no out-of-domain column."""
    tmp, config, study, _ = finished
    plain = tiny_config(tmp, tiny_model_dir, "plain", ood_test_prompts=None)
    shutil.copytree(config.out, plain.out)
    events = Recorder()
    again = run_study(plain, events, judge_factory=parity)
    assert not events.done and {"sample-policy", "judge-policy", "pairs", "eval-start"} <= set(events.skipped)
    assert again["table10"]["out_of_domain"] is None and "ood_accuracy" not in again["table2"][0]
    assert again["table10"]["rows"] == study["table10"]["rows"] and again["table1"] == study["table1"]
    assert "out-of-domain" not in (plain.out / "study.md").read_text()


def test_a_killed_study_resumes_to_the_same_tables(finished, tiny_model_dir):
    tmp, config, study, _ = finished
    # the finished study's folder as it was with two cells (s2-ipo, s3-ipo) not trained yet; the study is
    # then killed in the middle of s2-ipo, after its checkpoint of step 1
    killed = tiny_config(tmp, tiny_model_dir, "killed", save_every=1)
    shutil.copytree(config.out, killed.out)
    for label in ("s2-ipo", "s3-ipo"):  # their evaluation markers stay: a retrained cell must be evaluated again
        shutil.rmtree(killed.out / "cells" / label)
    (killed.out / "study.json").unlink()
    with pytest.raises(KeyboardInterrupt):
        run_study(killed, Recorder(kill_at=("s2-ipo", 1)), judge_factory=parity)
    cell = killed.out / "cells" / "s2-ipo"
    assert (cell / "checkpoint").is_dir() and not (cell / "summary.json").exists()
    assert [r["step"] for r in read_log(cell / "metrics.jsonl")] == [0, 1]
    assert not (killed.out / "study.json").exists()
    events = Recorder()
    resumed = run_study(killed, events, judge_factory=parity)
    assert {"sample-policy", "pairs", "s1-dpo", "s1-ipo"} <= set(events.skipped)
    assert {"train-s2-ipo", "train-s3-ipo", "eval-s2-ipo", "eval-s3-ipo", "eval-ood-s2-ipo"} <= set(events.done)
    assert "train-s1-dpo" not in events.done and "eval-s1-dpo" not in events.done
    for key in ("table1", "table2", "table10", "events", "fig4", "sources"):
        assert _rounded(resumed[key]) == _rounded(study[key]), key


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_another_setting_in_the_same_folder_is_refused(finished, tiny_model_dir):
    tmp, config, _, _ = finished
    changed = tiny_config(tmp, tiny_model_dir, "whole", steps=5)
    with pytest.raises(ValueError, match="other settings.*steps 2 -> 5"):
        run_study(changed, judge_factory=parity)


def test_too_few_pairs_is_one_clear_error(tmp_path, tiny_model_dir):
    # math-verify on a random model's words: nothing is right, so scenario 1 (best vs worst of the policy) has no pair
    config = tiny_config(tmp_path, tiny_model_dir, "none", scenarios=(1, 2), losses=("dpo",), reward_model=False)
    with pytest.raises(ValueError, match=r"scenario 1 \(policy/policy\) has 0 pair"):
        run_study(config)
    shutil.rmtree(config.out)


def cli_args(config: StudyConfig, out: Path) -> list[str]:
    """The `dpo3d study` flags of a tiny_config (the rest are the defaults both share)."""
    args = ["study", "--out", str(out), "--model", config.model, "--train-prompts", config.train_prompts,
            "--test-prompts", config.test_prompts, "--train-limit", "8", "--test-limit", "3", "-n", "4",
            "--max-new-tokens", "6", "--sample-batch-size", "16", "--heldout-share", "0.3", "--max-steps", "2",
            "--batch-size", "2", "--lr", "5e-3", "--log-every", "1", "--eval-every", "1", "--save-every", "0",
            "--probe-size", "4", "--unseen", "8", "--max-length", "96", "--eval-max-new-tokens", "6",
            "--eval-batch-size", "8", "--device", "cpu", "--ood-test-prompts", config.ood_test_prompts,
            "--ood-test-limit", str(config.ood_test_limit)]
    for loss in config.losses:
        args += ["--loss", loss]
    return args


def test_the_command_continues_a_finished_study_and_shows_its_tables(finished, tmp_path):
    from typer.testing import CliRunner

    from dpo3d_cli.app import app

    _, config, study, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(config.out, copy)
    result = CliRunner().invoke(app, cli_args(config, copy))
    assert result.exit_code == 0, result.output
    assert "Table 1" in result.output and "skipped" in result.output and "s4-ipo" in result.output
    # the accuracies on stderr carry their intervals, in-domain and out-of-domain
    start = study["table2"][0]
    assert "in-domain [95% interval]" in result.output and "out-of-domain [95% interval]" in result.output
    assert interval_text(start["accuracy"], start["interval"]) in result.output
    assert tables_of(json.loads((copy / "study.json").read_text())) == tables_of(json.loads(json.dumps(study)))


def test_the_command_refuses_a_bad_judge(tmp_path):
    from typer.testing import CliRunner

    from dpo3d_cli.app import app

    result = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--judge", "llm"])
    assert result.exit_code == 2 and "--base-url" in result.output


@pytest.mark.skipif(not LAUNCHER.exists(), reason="accelerate CLI")
def test_a_cell_trains_under_accelerate_launch(finished, tmp_path):
    """Two processes (gloo on CPU): the first samples nothing new (done), both train the missing cell."""
    _, config, _, _ = finished
    copy = tmp_path / "launched"
    shutil.copytree(config.out, copy)
    shutil.rmtree(copy / "cells" / "s2-dpo")
    (copy / "stages" / "eval-s2-dpo.json").unlink()
    result = subprocess.run(
        [str(LAUNCHER), "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "-m", "dpo3d", *cli_args(config, copy)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_config = json.loads((copy / "cells" / "s2-dpo" / "run_config.json").read_text())
    assert run_config["processes"] == 2 and run_config["global_batch"] == 4
    study = json.loads((copy / "study.json").read_text())
    row = next(r for r in study["table2"] if r["model"] == "s2-dpo")
    assert row["answers"] == 3  # evaluated (by math-verify here: the command's own judge) on the first process
    assert [r["step"] for r in read_log(copy / "cells" / "s2-dpo" / "metrics.jsonl")] == [0, 1, 2]


def test_poem_task_fills_table3_with_dpo_and_ppo_from_one_start(tmp_path, tiny_model_dir):
    config = study_config(
        out=tmp_path / "poem", model=str(tiny_model_dir), task="poem", train_prompts="poems:train",
        test_prompts="poems:test", train_limit=4, test_limit=2, losses=("dpo",), n=4, max_new_tokens=8,
        heldout_share=0.3, same_prompts=False, steps=2, batch_size=2, lr=5e-3, log_every=1, eval_every=1,
        save_every=0, probe_size=2, unseen_limit=4, max_length=128, eval_max_new_tokens=8, ppo_rollout_batch=8,
        ppo_minibatch=4, ppo_epochs=1, cpu=True, device="cpu", probe_responses=ProbeResponseConfig(max_new_tokens=6),
    )
    study = run_study(config, judge_factory=parity)
    # the same number of generated samples: 4 prompts x 4 candidates for DPO, 2 PPO steps of 8 rollouts
    assert study["samples"] == {"dpo": 16, "ppo": 16} and study["ppo_steps"] == 2
    assert [r["model"] for r in study["table3"]] == ["Base", "RLHF-PPO", "DPO"]
    for row in study["table3"]:
        assert row["poems"] == 2
        for metric in ("row_number", "words_per_row", "rhythm", "tone_pattern", "title", "score"):
            assert 0.0 <= row[metric] <= 1.0, (row, metric)
    ppo = read_log(config.out / "cells" / "poem-ppo" / "metrics.jsonl")
    assert [r["step"] for r in ppo] == [1, 2] and all("reward" in r for r in ppo)
    dpo = read_log(config.out / "cells" / "s1-dpo" / "metrics.jsonl")
    assert [r["step"] for r in dpo] == [0, 1, 2]
    # the scores are the poem rules' on each model's own poems
    answers = read_records(config.out / "eval" / "DPO.jsonl")
    assert study["table3"][2]["score"] == pytest.approx(sum(a["score"] for a in answers) / 2)
    assert "Table 3" in (config.out / "study.md").read_text()


def test_test_prompts_leave_out_the_training_ones(tmp_path, tiny_model_dir):
    from dpo3d.study.data import load_study_prompts

    both = str(write_prompts(tmp_path / "both.jsonl", 10))
    config = tiny_config(tmp_path, tiny_model_dir, "x", train_prompts=both, test_prompts=both, train_limit=6, test_limit=3)
    train, test = load_study_prompts(config, "train"), load_study_prompts(config, "test")
    assert [r["id"] for r in train] == [f"q{i}" for i in range(6)]
    assert [r["id"] for r in test] == ["q6", "q7", "q8"]


def test_the_llm_judge_fills_table2s_two_columns(tmp_path, tiny_model_dir):
    """--judge llm: each test answer's 1-5 score (a fake OpenAI client here) gives Table 2's shares of 5 and 4-or-5."""
    from types import SimpleNamespace

    from dpo3d.judges import evaluation as ev
    from dpo3d.study import LLMJudgeSettings
    from dpo3d.study.evaluate import llm_scored
    from dpo3d.study.tables import table2

    replies = {"a": "Score: 5", "bb": "Score: 4", "ccc": "Score: 2", "dddd": "no idea"}

    def create(**kwargs):
        answer = next(text for text in replies if f"<<{text}>>" in kwargs["messages"][-1]["content"])
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=replies[answer]))])

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    settings = LLMJudgeSettings(base_url="http://judge.test/v1", model="judge")
    answers = [{"id": f"q{i}", "prompt": "2+2?", "completion": f"<<{text}>>", "answer": "4", "source": label,
                "correct": i == 0, "score": float(i == 0)} for label in ("start", "s1-dpo")
               for i, text in enumerate(replies)]
    judged = llm_scored(answers, settings, client)
    assert [r["llm_score"] for r in judged[:4]] == [5, 4, 2, None]
    summaries = ev.math_summary(judged)["models"]
    config = tiny_config(tmp_path, tiny_model_dir, "x", scenarios=(1,), losses=("dpo",), llm_judge=settings)
    rows = table2(config, {"summary": summaries["start"]}, {"s1-dpo": {"summary": summaries["s1-dpo"]}})
    # three of the four answers got a score: one 5, one 4
    assert rows[0]["share_5"] == pytest.approx(1 / 3) and rows[0]["share_4_or_5"] == pytest.approx(2 / 3)
    # 1 of 3, Wilson by hand: centre (1/3 + 0.6403)/2.2805 = 0.4269, half 0.8595·sqrt(0.0741 + 0.1067) = 0.3654
    assert rows[0]["share_5_interval"] == pytest.approx([0.0615, 0.7923], abs=5e-4)
    assert share_text(rows[0], "share_5") == "33.3% [6.1, 79.2]"
    assert rows[1]["llm_judged"] == 3 and rows[1]["accuracy"] == 0.25


def test_each_cell_binds_its_loss_with_beta_and_the_loss_args_it_takes():
    config = StudyConfig(out=Path("s"), model="m", losses=("dpo", "flex", "sft"), beta=0.2, loss_args=("beta_rejected=0.01",))
    config.validate()
    assert [(c.name, c.options) for c in map(config.bound_loss, config.losses)] == [
        ("dpo", {"beta": 0.2}), ("flex", {"beta_chosen": 0.2, "beta_rejected": 0.01}), ("sft", {}),
    ]  # fmt: skip
    assert config.fingerprint_fields()["loss_args"] == ("beta_rejected=0.01",)  # another option: another study
    # a study without --loss-arg keeps the fingerprint of a folder made before it existed
    assert "loss_args" not in StudyConfig(out=Path("s"), model="m").fingerprint_fields()
    with pytest.raises(ValueError, match="loss 'dpo' has no option 'alpha'; it takes: beta"):
        StudyConfig(out=Path("s"), model="m", losses=("dpo",), loss_args=("alpha=1",)).validate()
