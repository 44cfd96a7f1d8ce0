"""dpo3d.integrations.trl: the 3D probes, detector and guard inside the real TRL DPOTrainer (1.16), on a tiny model.

The runs: DPO on 8 arithmetic pairs (chosen "It is 2i.", rejected "It is 2i+1."), constant lr 5e-2, probes every
step, 10 steps. At that rate (measured on this host) the probe chosen log-prob rises +27 nats by step 4, then the
rejected falls far faster (drastic drop at 5) and the chosen falls from its peak while the margin grows
(degradation at 6; by step 9 it is 25 nats below the peak): warnings the guards act on.
"""

from __future__ import annotations

import copy
import json

import pytest

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from dpo3d.data.run_log import read_log  # noqa: E402
from dpo3d.integrations.trl import FOLDER, PREFIX, ThreeDCallback  # noqa: E402
from dpo3d.models.tiny import tiny_causal_lm  # noqa: E402
from dpo3d.watch.probes import ProbeScorer  # noqa: E402

from .launching import port_args

ROWS = [{"prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
         "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
         "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}."}]} for i in range(8)]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("trl") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def run(out, pairs, tokenizer, guard=None, max_steps=10, save_steps=100, resume=None, report_to=(), every=1,
        logging_steps=1):
    model = tiny_causal_lm(tokenizer, seed=0)
    args = DPOConfig(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=2, logging_steps=logging_steps,
                     save_steps=save_steps, report_to=list(report_to), learning_rate=5e-2, lr_scheduler_type="constant", use_cpu=True, bf16=False,
                     disable_tqdm=True, seed=0)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(ROWS),
                         processing_class=tokenizer)
    callback = ThreeDCallback(pairs, every=every, probe_size=4, greedy_tokens=8, guard=guard).attach(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


@pytest.fixture(scope="module")
def plain(tmp_path_factory, pairs, tokenizer):
    """No guard: 10 steps, a checkpoint every 2, TensorBoard on."""
    out = tmp_path_factory.mktemp("plain")
    return (out, *run(out, pairs, tokenizer, save_steps=2, report_to=["tensorboard"]))


def losses(trainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


def test_the_run_shows_degradation(plain):
    _, _, callback = plain
    degradation = [event for event in callback.watch.events if event["property"] == "degradation"]
    assert degradation and degradation[0]["since"] < degradation[0]["step"] < 10  # since = the chosen's peak


def test_probe_values_equal_dpo3d_scorer_on_the_saved_checkpoints(plain, tokenizer):
    out, _, callback = plain
    for step in (2, 4, 6):
        model = AutoModelForCausalLM.from_pretrained(out / f"checkpoint-{step}")
        scorer = ProbeScorer(callback.scorer.probes, tokenizer.pad_token_id, callback.options.batch_size,
                             baseline=callback.scorer.baseline)
        again = scorer.measure(model, step)
        live = callback.records[step]
        assert live["step"] == step
        for key, value in again.items():
            assert live[key] == pytest.approx(value, abs=1e-5), (step, key)


def test_metrics_reach_the_trainers_log_history_and_tensorboard(plain):
    out, trainer, callback = plain
    logged = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    for step in range(1, 11):
        assert logged[step][f"{PREFIX}probe_chosen_logp_delta"] == callback.records[step]["probe_chosen_logp_delta"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = list((out / "runs").glob("*/events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = accumulator.Scalars(f"train/{PREFIX}probe_chosen_logp_delta")
    assert [s.step for s in scalars] == list(range(1, 11))
    assert scalars[-1].value == pytest.approx(callback.records[10]["probe_chosen_logp_delta"], rel=1e-6)


def test_probe_steps_off_the_logging_steps_are_logged_at_their_own_step(tmp_path, pairs, tokenizer):
    """every=2 against logging_steps=3: the callback asks for a log at steps 2 and 4, its fields are on exactly those
    log entries (and on 6, a step both want), never on the trainer's own step-3 log."""
    trainer, callback = run(tmp_path, pairs, tokenizer, max_steps=6, every=2, logging_steps=3)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [2, 3, 4, 6]
    assert [entry["step"] for entry in logged if f"{PREFIX}probe_chosen_logp_delta" in entry] == [2, 4, 6]
    for entry in logged[0], logged[2], logged[3]:
        step = entry["step"]
        assert entry[f"{PREFIX}probe_chosen_logp_delta"] == callback.records[step // 2]["probe_chosen_logp_delta"]


def test_records_and_events_are_written_for_diagnose(plain):
    out, _, callback = plain
    records = read_log(out / FOLDER / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(11))
    assert records[0]["probe_noise_nats"] < 1e-3  # float32: rounding of sums of ~-60 nats
    summary = json.loads((out / FOLDER / "summary.json").read_text())
    assert summary["three_d_events"] == callback.watch.events


def test_stop_guard_ends_training_at_the_detectors_event(tmp_path, pairs, tokenizer, plain):
    trainer, callback = run(tmp_path, pairs, tokenizer, guard="stop")
    stop_on = callback.watch.guard.settings.stop_on
    first = next(event for event in callback.watch.events if event["property"] in stop_on)
    assert trainer.state.global_step == first["step"] < 10
    assert callback.records[-1]["step"] == first["step"]
    peak = max(callback.records, key=lambda r: r["probe_chosen_logp_delta"])["step"]
    assert callback.watch.actions[0]["changes"]["keep_step"]["new"] == peak  # the state to keep: the chosen's peak


def test_sft_guard_changes_trls_loss_from_its_step_on(tmp_path, pairs, tokenizer, plain):
    _, unguarded, _ = plain
    trainer, callback = run(tmp_path, pairs, tokenizer, guard="sft")
    acted, last = callback.watch.actions[0]["step"], callback.watch.actions[-1]["changes"]["sft_weight"]["new"]
    assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, last]
    before, after = losses(unguarded), losses(trainer)
    for step in range(1, acted + 1):  # the step that fired trained with the old loss
        assert after[step] == pytest.approx(before[step], rel=1e-6)
    for step in range(acted + 1, 11):
        assert after[step] != pytest.approx(before[step], rel=1e-3)


def test_resume_from_a_trl_checkpoint_keeps_the_callbacks_state(tmp_path, pairs, tokenizer):
    first, watched = run(tmp_path, pairs, tokenizer, guard="sft", save_steps=6)
    resumed, again = run(tmp_path, pairs, tokenizer, guard="sft", resume=str(tmp_path / "checkpoint-6"))
    assert (tmp_path / "checkpoint-6").is_dir() and watched.watch.actions[0]["step"] < 6
    assert resumed.loss_types == ["sigmoid", "sft"]  # the action before step 6 replayed onto the new trainer
    assert again.watch.events == watched.watch.events
    assert [r["step"] for r in again.records] == list(range(11))
    for step in (7, 10):
        assert again.records[step]["probe_chosen_logp_delta"] == pytest.approx(
            watched.records[step]["probe_chosen_logp_delta"], abs=1e-4)
    assert [r["step"] for r in read_log(tmp_path / FOLDER / "metrics.jsonl")] == list(range(11))


def test_flex_and_unknown_guards_are_refused():
    with pytest.raises(ValueError, match="separate β"):
        ThreeDCallback("pairs.jsonl", guard="flex")
    with pytest.raises(ValueError, match="positive"):
        ThreeDCallback("pairs.jsonl", every=0)


def test_diagnose_on_trls_checkpoints_gives_the_callbacks_records_and_events(plain, pairs, tiny_model_dir):
    """`dpo3d diagnose OUT --pairs P --base START`: the checkpoints (every 2 steps) scored afterwards give the
    callback's records at those steps, and the detector over them the events the live callback raises when it
    probes every 2 steps (its records at the even steps)."""
    from typer.testing import CliRunner

    from dpo3d.watch.detector import ThreeDDetector
    from dpo3d_cli.app import app

    out, _, callback = plain
    result = CliRunner().invoke(app, ["diagnose", str(out), "--pairs", str(pairs), "--base", str(tiny_model_dir),
                                      "--probe-size", "4", "--greedy-tokens", "8"])
    assert result.exit_code == 0, result.output
    scored = read_log(out / "3d-checkpoints" / "metrics.jsonl")
    assert [r["step"] for r in scored] == [0, 2, 4, 6, 8, 10]
    for record in scored:
        live = callback.records[record["step"]]
        for key, value in record.items():
            assert live[key] == pytest.approx(value, abs=1e-5), (record["step"], key)
    every_two = ThreeDDetector(callback.detector_settings).read_all([callback.records[s] for s in range(0, 11, 2)])
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["step"], e["property"]) for e in printed] == [(e["step"], e["property"]) for e in every_two]
    assert every_two  # the run does show a property at this spacing


def test_diagnose_needs_a_base_for_full_model_checkpoints(plain, pairs, tmp_path):
    from typer.testing import CliRunner

    from dpo3d_cli.app import app

    out, _, _ = plain
    result = CliRunner().invoke(app, ["diagnose", str(out), "--pairs", str(pairs), "--out", str(tmp_path / "s")])
    assert result.exit_code != 0 and "--base" in result.output


def test_two_process_ddp_run_probes_on_every_rank(tmp_path, pairs, tiny_model_dir):
    """accelerate launch, 2 processes (gloo): every rank runs the probe forwards (a sharded model needs each rank
    in them) and gets the same records; only rank 0 writes them. (The run's data order differs from a 1-process
    run's, so its values are not compared with one.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("trl_ddp_run.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launcher = str(Path(sys.executable).parent / "accelerate")
    def launch():
        return subprocess.run([launcher, "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines",
                               "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path / "two"),
                               str(pairs), str(tiny_model_dir), "1"], capture_output=True, text=True, env=env, timeout=600)

    two = launch()
    # a rank of a 2-process gloo launch on a loaded 2-core host now and then dies in C++ with this abort (about 1 in
    # 8 launches here, in torch's own threads, not in dpo3d's code): one more launch, then the run must succeed
    if two.returncode != 0 and "terminate called without an active exception" in two.stderr:
        two = launch()
    assert two.returncode == 0, two.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"records-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["step"] for r in ranks[0]] == [0, 2, 4]
    assert ranks[0][-1]["probe_chosen_logp_delta"] != 0  # it trained
    assert ranks[0] == ranks[1]
    assert read_log(tmp_path / "two" / FOLDER / "metrics.jsonl") == ranks[0]
