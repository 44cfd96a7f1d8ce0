"""dpo3d iterate on tiny models: rounds chain (each trains from the previous round's model), one probe set
spans them, a rerun resumes where it stopped, other settings are refused; the joined trajectory by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dpo3d.data.run_log import read_log
from dpo3d.iterate import IterateConfig, IterateEvents, run_iterate
from dpo3d.iterate.config import Layout
from dpo3d.iterate.report import joined_records
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig
from dpo3d.watch.detector import DetectorSettings, ThreeDDetector
from dpo3d.watch.probe_responses import ProbeResponseConfig


def by_sample_index(config):
    """A judge whose verdict is known in advance: a later sample scores higher, so every prompt pairs its
    last sample (chosen) against its first (rejected), whatever a random tiny model writes."""
    return lambda records: [float(r["sample_index"]) for r in records]


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: say a colour."}) + "\n" for i in range(n)))
    return path


def make_config(tmp_path: Path, model_dir, out: str = "iter", **changes) -> IterateConfig:
    train = DPORunConfig(
        model="", pairs="", loop=LoopConfig(out=Path("."), lr=5e-3, batch_size=2, grad_accum=1, max_steps=2,
                                            warmup_ratio=0.0, schedule="constant", log_every=1),
        probe_size=2, max_length=64, probe_responses=ProbeResponseConfig(greedy=False, samples=0))
    settings = dict(out=tmp_path / out, model=str(model_dir), prompts=str(write_prompts(tmp_path / "prompts.jsonl", 8)),
                    train=train, rounds=2, prompts_per_round=4, n=2, temperature=1.0, max_new_tokens=6,
                    sample_batch_size=8, reward="contains:x", device="cpu")
    settings.update(changes)
    return IterateConfig(**settings)


class Heard(IterateEvents):
    def __init__(self):
        super().__init__(on_stage=lambda name, what: self.started.append(name),
                         on_skip=lambda name, why: self.skipped.append(name))
        self.started: list[str] = []
        self.skipped: list[str] = []


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("iterate")
    config = make_config(tmp, tiny_model_dir)
    heard = Heard()
    report = run_iterate(config, heard, reward_factory=by_sample_index)
    return config, report, heard


def test_rounds_chain_each_from_the_previous_rounds_model(finished):
    config, report, heard = finished
    layout = Layout(config.out)
    assert [name for name in heard.started] == [
        f"round {r}: {stage}" for r in (1, 2) for stage in ("sample", "judge", "build-pairs", "train-dpo")]
    one = json.loads((layout.run(1) / "run_config.json").read_text())["extra"]
    two = json.loads((layout.run(2) / "run_config.json").read_text())["extra"]
    assert one["model"] == config.model and two["model"] == str(layout.run(1))
    assert one["ref"] == two["ref"] == config.model  # --reference initial: the starting model every round
    # round 2 sampled its own block of prompts from round 1's model
    samples = [r for r in map(json.loads, layout.samples(2).read_text().splitlines())]
    assert sorted({r["id"] for r in samples}) == ["q4", "q5", "q6", "q7"] and len(samples) == 8
    assert json.loads(layout.samples(2).with_name("samples.jsonl.run.json").read_text())["model"] == str(layout.run(1))
    # the judge's scores, and best (last sample) against worst (first) for every prompt
    pairs = [json.loads(line) for line in layout.pairs(2).read_text().splitlines()]
    assert len(pairs) == 4 and all(p["chosen_sample_index"] == 1 and p["rejected_sample_index"] == 0 for p in pairs)
    assert [row["pairs"] for row in report["rounds"]] == [4, 4]
    assert [row["sample_score"] for row in report["rounds"]] == [0.5, 0.5]  # scores 0 and 1 per prompt
    # right/wrong scores: the round's sample accuracy gets its 95% Wilson interval; 4 of 8 by hand (z² = 3.8415,
    # 1 + z²/n = 1.4802): centre 0.5, half 1.3242·sqrt(0.03125 + 0.01501) = 0.2848 → [0.215, 0.785]
    assert [row["sample_right"] for row in report["rounds"]] == [4, 4]
    assert report["rounds"][0]["sample_interval"] == pytest.approx([0.215, 0.785], abs=5e-4)
    assert "50.0% [21.5, 78.5] (4/8)" in (config.out / "iterate.md").read_text()


def test_one_probe_set_spans_every_round_and_the_report(finished):
    config, report, _ = finished
    layout = Layout(config.out)
    probe_ids = [json.loads(line)["id"] for line in layout.probe_pairs.read_text().splitlines()]
    assert len(probe_ids) == 2 and set(probe_ids) <= {"q0", "q1", "q2", "q3"}  # round 1's pairs
    for number in (1, 2):
        extra = json.loads((layout.run(number) / "run_config.json").read_text())["extra"]
        assert extra["probe_pairs"] == str(layout.probe_pairs) and extra["probe_size"] == 2
    # round 2 starts where round 1 ended: the same model scored on the same probes
    last_of_one = read_log(layout.run(1) / "metrics.jsonl")[-1]
    first_of_two = read_log(layout.run(2) / "metrics.jsonl")[0]
    # float32 sums of ~6-token probe responses, the same weights and batch: equal to float32 rounding
    assert first_of_two["probe_chosen_logp"] == pytest.approx(last_of_one["probe_chosen_logp"], abs=1e-4)
    joined = report["trajectory"]
    assert [p["step"] for p in joined] == [0, 1, 2, 3, 4] and [p["round"] for p in joined] == [1, 1, 1, 2, 2]
    start = read_log(layout.run(1) / "metrics.jsonl")[0]["probe_chosen_logp"]
    end = read_log(layout.run(2) / "metrics.jsonl")[-1]["probe_chosen_logp"]
    assert joined[-1]["probe_chosen_logp_delta"] == pytest.approx(end - start, abs=1e-12)
    assert (config.out / "probes.png").stat().st_size > 10_000
    text = (config.out / "iterate.md").read_text()
    assert "| 2 | 8 | 50.0% [21.5, 78.5] (4/8) | 4 | 2 |" in text and "round 2: train-dpo" in text


def test_a_rerun_skips_what_is_done_and_redoes_only_what_is_missing(finished, tmp_path):
    config, report, _ = finished
    layout = Layout(config.out)
    again = Heard()
    assert run_iterate(config, again, reward_factory=by_sample_index)["rounds"] == report["rounds"]
    assert again.started == [] and len(again.skipped) == 6  # (sample+judge, build-pairs, train) × 2 rounds
    # a run stopped during round 2's training before its first checkpoint: only that training runs again
    before = read_log(layout.run(2) / "metrics.jsonl")
    (layout.run(2) / "summary.json").unlink()
    resumed = Heard()
    run_iterate(config, resumed, reward_factory=by_sample_index)
    assert resumed.started == ["round 2: train-dpo"]
    after = read_log(layout.run(2) / "metrics.jsonl")
    assert [r["loss"] for r in after if "loss" in r] == [r["loss"] for r in before if "loss" in r]


def test_a_rerun_with_other_settings_is_refused_naming_them(finished):
    config, _, _ = finished
    with pytest.raises(ValueError, match="n 2 -> 3, rounds 2 -> 3"):
        run_iterate(replace(config, n=3, rounds=3), reward_factory=by_sample_index)


def test_reference_previous_trains_each_round_against_its_own_start(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, reference="previous", rounds=2)
    run_iterate(config, reward_factory=by_sample_index)
    layout = Layout(config.out)
    two = json.loads((layout.run(2) / "run_config.json").read_text())["extra"]
    assert two["model"] == two["ref"] == str(layout.run(1))


def test_bad_settings_stop_before_any_work(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="--reference"):
        run_iterate(make_config(tmp_path, tiny_model_dir, reference="moving"))
    with pytest.raises(ValueError, match="fewer than --prompts-per-round 4 × --rounds 3"):
        run_iterate(make_config(tmp_path, tiny_model_dir, rounds=3), reward_factory=by_sample_index)
    with pytest.raises(ValueError, match="--sample-dtype"):
        run_iterate(make_config(tmp_path, tiny_model_dir, sample_dtype="fp8"), reward_factory=by_sample_index)
    assert not (tmp_path / "iter" / "round-1").exists()


def test_the_sample_stage_runs_in_the_dtype_auto_resolves_to_and_training_keeps_float32(
        monkeypatch, tmp_path, tiny_model_dir):
    from dpo3d.iterate import rounds
    from dpo3d.models import precision

    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    loaded = []
    real_load_sampler = rounds.load_sampler
    monkeypatch.setattr(rounds, "load_sampler", lambda backend, model, sampling, load, device: (
        loaded.append(load.dtype), real_load_sampler(backend, model, sampling, load, device))[1])
    config = make_config(tmp_path, tiny_model_dir, rounds=1)
    assert config.sample_dtype == "auto"
    run_iterate(config, reward_factory=by_sample_index)
    layout = Layout(config.out)
    settings = json.loads(layout.samples(1).with_name("samples.jsonl.run.json").read_text())
    assert settings["dtype"] == "bfloat16" and loaded == [torch.bfloat16]
    from safetensors.torch import load_file

    trained = load_file(layout.run(1) / "model.safetensors")
    assert {str(tensor.dtype) for tensor in trained.values()} == {"torch.float32"}


def _round(folder: Path, chosen: list[float], rejected: list[float]) -> None:
    folder.mkdir(parents=True)
    records = [{"step": step, "probe_chosen_logp": c, "probe_rejected_logp": r,
                "probe_chosen_logp_per_token": c / 10, "probe_rejected_logp_per_token": r / 10}
               for step, (c, r) in enumerate(zip(chosen, rejected, strict=True))]
    records[0].update({"probe_noise_nats": 1e-5, "probe_noise_nats_per_token": 1e-6})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_joined_trajectory_shows_what_no_single_round_does(tmp_path):
    """Worked by hand: the chosen falls 0.6 nats in each of two rounds (round 2 starts where round 1 ended).
    Each round alone stays under the detector's 1-nat min_fall; the run, from its start, falls 1.2."""
    layout = Layout(tmp_path)
    _round(layout.run(1), chosen=[-20.0, -20.3, -20.6], rejected=[-30.0, -30.5, -31.0])
    _round(layout.run(2), chosen=[-20.6, -20.9, -21.2], rejected=[-31.0, -31.5, -32.0])
    joined = joined_records(layout, 2)
    assert [p["step"] for p in joined] == [0, 1, 2, 3, 4]
    assert [round(p["probe_chosen_logp_delta"], 6) for p in joined] == [0.0, -0.3, -0.6, -0.9, -1.2]
    assert [round(p["probe_rejected_logp_per_token_delta"], 6) for p in joined] == [0.0, -0.05, -0.1, -0.15, -0.2]
    assert joined[0]["probe_noise_nats"] == 1e-5 and "probe_noise_nats" not in joined[1]
    each_round = [ThreeDDetector(DetectorSettings()).read_all(joined_records(Layout(tmp_path), 1))]
    assert each_round == [[]]  # round 1 alone: -0.6 nats, below min_fall
    events = ThreeDDetector(DetectorSettings()).read_all(joined)
    assert [(e["property"], e["step"]) for e in events] == [("likelihood_displacement", 4)]


def test_the_command_runs_a_round_and_reports_each_stage(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from dpo3d_cli.app import app

    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    args = ["iterate", "--prompts", str(prompts), "--model", str(tiny_model_dir), "--out", str(tmp_path / "it"),
            "--rounds", "1", "-n", "4", "--max-new-tokens", "3", "--temperature", "1.0", "--reward", "contains:a",
            "--max-steps", "1", "--batch-size", "2", "--probe-size", "2", "--no-probe-greedy", "--probe-samples", "0",
            "--device", "cpu", "--loss", "ipo", "--loss-arg", "beta=0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for stage in ("sample", "judge", "build-pairs", "train-dpo"):
        assert f"round 1: {stage} took" in result.output, stage
    extra = json.loads((tmp_path / "it" / "round-1" / "train" / "run_config.json").read_text())["extra"]
    assert extra["loss"] == "ipo" and extra["hyperparameters"] == {"beta": 0.2}
    assert (tmp_path / "it" / "iterate.md").is_file()
    refused = CliRunner().invoke(app, [*args[:-4], "--reference", "moving"])
    assert refused.exit_code == 2 and "--reference takes initial or previous" in refused.output


def test_a_folder_from_before_sample_dtype_and_compile_continues_with_the_dtype_it_sampled_in(tmp_path, tiny_model_dir):
    from dpo3d.generation.sampling_run import RunMismatch, check_settings

    config = make_config(tmp_path, tiny_model_dir, rounds=1, sample_dtype="float32")
    run_iterate(config, reward_factory=by_sample_index)
    saved_path = config.out / "iterate_config.json"
    saved = json.loads(saved_path.read_text())
    del saved["sample_dtype"], saved["train"]["loop"]["compile"]  # as the run of an older dpo3d wrote it
    saved_path.write_text(json.dumps(saved))
    samples_settings = Layout(config.out).samples(1).with_name("samples.jsonl.run.json")
    old = json.loads(samples_settings.read_text())
    samples_settings.write_text(json.dumps({**old, "dtype": "torch.float32"}))

    heard = Heard()
    run_iterate(replace(config, train=replace(config.train, loop=replace(config.train.loop, compile=True))), heard,
                reward_factory=by_sample_index)  # --compile changes speed, not the run: it may differ on a rerun
    assert heard.started == [] and "round 1: train-dpo" in heard.skipped
    with pytest.raises(ValueError, match="sample_dtype 'float32' -> 'bfloat16'"):
        run_iterate(replace(config, sample_dtype="bfloat16"), reward_factory=by_sample_index)
    check_settings(Layout(config.out).samples(1), {"dtype": "float32"})  # "torch.float32" then, "float32" now
    with pytest.raises(RunMismatch, match="dtype 'torch.float32' -> 'bfloat16'"):
        check_settings(Layout(config.out).samples(1), {"dtype": "bfloat16"})
