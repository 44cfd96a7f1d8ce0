"""train-dpo --guard / --keep-best on a tiny model: the guard's actions change the loss from the next step, a stop
ends the run and leaves the best step's model in OUT, --keep-best saves OUT/best, --resume replays the guard, and
two data-parallel processes train with the loss the main process's guard chose.

At lr 1e-2 the tiny model on tests/test_train_dpo.py's pairs runs into the paper's pattern within 4 steps (plain
DPO, measured): the probe chosen log-prob changes +2.38, +2.06, +3.53, +1.41 nats at steps 1-4 while the rejected
falls 1.71, 2.95, 1.55, 6.10. Per token (7-token chosen, 11-token rejected responses) the chosen rises faster
than the rejected falls (+0.34 against -0.16 nats/token at step 1), so there is no drastic drop; the step-2 dip
(0.32 nats below the step-1 peak) is under the detector's 1 nat; degradation comes at step 4 (the chosen 2.12
nats below its step-3 peak while the margin grew).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo3d.data.run_log import read_log
from dpo3d.models.loading import load_causal_lm
from dpo3d.pairs.pair_set import load_pairs
from dpo3d.scoring.logprobs import score_sequences
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch.probe_responses import ProbeResponseConfig
from dpo3d.watch.probes import probe_indices
from dpo3d_cli.app import app

from .launching import port_args
from .test_train_dpo import write_pairs

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = Path(sys.executable).parent / "accelerate"


def config(tmp_path, model_dir, out, steps=10, guard=None, keep_best=None, **loop) -> DPORunConfig:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    settings = {"lr": 1e-2, "batch_size": 2, "grad_accum": 2, "max_steps": steps, "warmup_ratio": 0.0,
                "schedule": "constant", "seed": 0, "cpu": True, **loop}
    return DPORunConfig(model=str(model_dir), pairs=pairs, loop=LoopConfig(out=tmp_path / out, **settings),
                        eval_pairs=pairs, eval_every=2, probe_size=4, guard=guard, keep_best=keep_best,
                        probe_responses=ProbeResponseConfig(greedy=False, samples=0))


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in records]


def probe_chosen_logp(model_dir: Path, run: DPORunConfig) -> float:
    """The probe chosen log-prob (mean over the probe pairs' summed log-probs) of the model saved in ``model_dir``."""
    from dpo3d.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    pairs = load_pairs(run.pairs, tokenizer, run.max_length, 0, run.loop.seed)
    chosen = [pairs.chosen[i] for i in probe_indices(len(pairs), run.probe_size, run.loop.seed)]
    return float(score_sequences(load_causal_lm(str(model_dir)), chosen, tokenizer.pad_token_id).sum.mean())


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("plain")
    return read_log(train_dpo(config(tmp, tiny_model_dir, "plain")).out / "metrics.jsonl")


def test_sft_guard_adds_the_sft_term_from_the_step_after_the_warning(tmp_path, tiny_model_dir, plain):
    result = train_dpo(config(tmp_path, tiny_model_dir, "sft", guard="sft"))
    records = read_log(result.out / "metrics.jsonl")
    acted = [r for r in records if "guard_actions" in r]
    first = acted[0]["guard_actions"][0]
    assert (first["step"], first["trigger"]) == (4, "degradation")
    assert first["changes"] == {"sft_weight": {"old": 0.0, "new": 0.1}, "loss": {"old": "dpo", "new": "dpo:1,sft:0.1"}}
    # up to the warning's step the run is plain DPO; the step after trains with the SFT term
    assert [{k: v for k, v in r.items() if k != "guard_actions"} for r in comparable(records[:5])] == comparable(plain[:5])
    assert records[5]["loss"] != pytest.approx(plain[5]["loss"], rel=1e-3)
    # the SFT term keeps the chosen rising where plain DPO's fell (plain: 3.53 at step 3, 1.41 at step 4)
    assert records[-1]["probe_chosen_logp_delta"] > plain[-1]["probe_chosen_logp_delta"] + 1.0
    summary = json.loads((result.out / "summary.json").read_text())
    assert summary["guard"]["actions"] == [a for r in acted for a in r["guard_actions"]]
    assert summary["guard"]["final_loss"] == acted[-1]["guard_actions"][-1]["changes"]["loss"]["new"]
    assert summary["guard"]["stopped_at"] is None and "best" not in summary


def test_flex_guard_lowers_beta_rejected(tmp_path, tiny_model_dir):
    result = train_dpo(config(tmp_path, tiny_model_dir, "flex", steps=4, guard="flex"))
    summary = json.loads((result.out / "summary.json").read_text())
    action = summary["guard"]["actions"][0]
    assert action["changes"] == {"loss": {"old": "dpo", "new": "flex"}, "beta_rejected": {"old": 0.1, "new": 0.05}}
    assert summary["guard"]["final_hyperparameters"] == {"beta_chosen": 0.1, "beta_rejected": 0.05}


def test_stop_guard_ends_the_run_and_leaves_the_peak_model_in_out(tmp_path, tiny_model_dir, plain):
    run = config(tmp_path, tiny_model_dir, "stop", guard="stop")
    result = train_dpo(run)
    records = read_log(result.out / "metrics.jsonl")
    # plain DPO: the chosen peaks at step 3 (3.53) and the degradation warning comes at step 4
    peak = max(range(5), key=lambda s: plain[s]["probe_chosen_logp_delta"])
    assert peak == 3
    assert result.stopped_at == 4 and [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert records[4]["guard_actions"][0]["changes"]["keep_step"] == {"old": None, "new": 3}
    assert json.loads((result.out / "best" / "best.json").read_text()) == {"step": 3}
    # OUT (and OUT/best) hold the model of step 3, not the one the run stopped at
    for folder in (result.out, result.out / "best"):
        assert probe_chosen_logp(folder, run) == pytest.approx(records[3]["probe_chosen_logp"], abs=1e-3)
    assert abs(records[4]["probe_chosen_logp"] - records[3]["probe_chosen_logp"]) > 1.0
    summary = json.loads((result.out / "summary.json").read_text())
    assert summary["best"]["step"] == 3 and summary["guard"]["stopped_at"] == 4


def test_keep_best_without_a_guard_saves_the_peak_and_trains_on(tmp_path, tiny_model_dir, plain):
    run = config(tmp_path, tiny_model_dir, "best", keep_best="chosen")
    result = train_dpo(run)
    records = read_log(result.out / "metrics.jsonl")
    # keeping the best changes nothing in training (its records only mark the steps saved as the best)
    assert [{k: v for k, v in r.items() if k != "best_step"} for r in comparable(records)] == comparable(plain)
    peaks = [r["step"] for k, r in enumerate(plain) if all(r["probe_chosen_logp_delta"] > q["probe_chosen_logp_delta"] for q in plain[:k])]
    assert [r["step"] for r in records if "best_step" in r] == peaks  # saved each time the chosen rose to a new peak
    best = max(records, key=lambda r: r["probe_chosen_logp_delta"])["step"]
    assert json.loads((result.out / "best" / "best.json").read_text()) == {"step": best}
    assert best < 10 and result.stopped_at is None  # the peak is not the last step (the model in OUT)
    assert probe_chosen_logp(result.out / "best", run) == pytest.approx(records[best]["probe_chosen_logp"], abs=1e-3)
    assert probe_chosen_logp(result.out, run) == pytest.approx(records[-1]["probe_chosen_logp"], abs=1e-3)


class Crash(Exception):
    pass


def test_resume_replays_the_guard(tmp_path, tiny_model_dir):
    whole = train_dpo(config(tmp_path, tiny_model_dir, "whole", guard="sft", save_every=4))

    def crash(step):
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        train_dpo(config(tmp_path, tiny_model_dir, "broken", guard="sft", save_every=4), LoopCallbacks(on_step=crash))
    resumed = train_dpo(config(tmp_path, tiny_model_dir, "broken", guard="sft", save_every=4, resume=True))
    expected = read_log(whole.out / "metrics.jsonl")
    # the guard acted at step 4, the step of the checkpoint: the resumed run trains with dpo:1,sft:0.1 from step 5
    assert any("guard_actions" in r for r in expected[:5])
    assert comparable(read_log(resumed.out / "metrics.jsonl")) == comparable(expected)
    for out in (whole.out, resumed.out):
        assert json.loads((out / "summary.json").read_text())["guard"]["actions"] == [
            a for r in expected for a in r.get("guard_actions", [])]


def test_cli_guard_prints_its_actions_and_refuses_what_cannot_apply(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    common = ["train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--lr", "1e-2", "--batch-size", "2",
              "--max-steps", "4", "--warmup-ratio", "0", "--schedule", "constant", "--probe-size", "4", "--no-probe-greedy", "--probe-samples", "0",
              "--device", "cpu"]
    result = CliRunner().invoke(app, [*common, "--guard", "flex", "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert "guard step 4: guard flex on degradation: loss dpo → flex, beta_rejected 0.1 → 0.05" in " ".join(result.output.split())
    refused = CliRunner().invoke(app, [*common, "--loss", "ipo", "--guard", "flex", "--out", str(tmp_path / "no")])
    assert refused.exit_code != 0 and "guard flex lowers β_l" in refused.output
    assert not (tmp_path / "no" / "metrics.jsonl").exists()
    unknown = CliRunner().invoke(app, [*common, "--keep-best", "margin", "--out", str(tmp_path / "no2")])
    assert unknown.exit_code != 0 and "keep-best 'margin': choose from chosen" in unknown.output


WORKER = """
import json, sys
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.watch.probe_responses import ProbeResponseConfig
settings = json.loads(sys.argv[1])
run = {**settings["run"], "probe_responses": ProbeResponseConfig(greedy=False, samples=0)}
result = train_dpo(DPORunConfig(**run, loop=LoopConfig(**settings["loop"])))
print("stopped at", result.stopped_at)
"""


@pytest.mark.skipif(not LAUNCHER.exists(), reason="accelerate CLI")
def test_two_processes_follow_the_main_process_guard(tmp_path, tiny_model_dir):
    """Only the main process runs the detector and the guard: the other trains with the loss it chose (else the
    averaged gradients, hence the metrics, differ from one process's) and stops at the same step (else it hangs)."""
    single = config(tmp_path, tiny_model_dir, "one", guard="sft", batch_size=4)
    expected = read_log(train_dpo(single).out / "metrics.jsonl")
    assert any("guard_actions" in r for r in expected)
    run = {"model": str(tiny_model_dir), "pairs": str(single.pairs), "eval_pairs": str(single.pairs), "eval_every": 2,
           "probe_size": 4, "guard": "sft"}
    loop = {"out": str(tmp_path / "two"), "lr": 1e-2, "batch_size": 2, "grad_accum": 2, "max_steps": 10,
            "warmup_ratio": 0.0, "schedule": "constant", "seed": 0, "cpu": True}
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    done = subprocess.run(
        [str(LAUNCHER), "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(worker), json.dumps({"run": run, "loop": loop})],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    got = read_log(tmp_path / "two" / "metrics.jsonl")
    assert [r.get("guard_actions") for r in got] == [r.get("guard_actions") for r in expected]
    for want, have in zip(expected, got, strict=True):
        for key in ("loss", "probe_chosen_logp_delta", "probe_rejected_logp_delta", "grad_norm"):
            if key in want:
                assert have[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), (want["step"], key)
    assert "stopped at None" in done.stdout
