"""train-dpo under FSDP2 (2 gloo processes on CPU) trains like one process with the same global batch: the
same metrics, a checkpoint that resumes (gathered weights, full optimizer state), and a final model that loads
and computes what the one-process model computes. Also: the launches the loop refuses, and DeepSpeed's settings.

accelerate turns FSDP on only for GPU-like backends: on CPU it sets up gloo and silently runs DDP (``--use_fsdp``
with ``--device cpu``) or no process group at all (without it). The worker below therefore builds the Accelerator
on CPU, then switches accelerate's process-wide state to FSDP2, as accelerate's GPU path leaves it; from there on
``prepare``, ``no_sync``, ``clip_grad_norm_``, ``get_state_dict`` and the loop run their real FSDP2 code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from dpo3d.data.run_log import read_log
from dpo3d.training import sharding
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo

from .launching import port_args

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = Path(sys.executable).parent / "accelerate"
PROCESSES, STEPS = 2, 4
# float32 on CPU; FSDP reduce-scatters the gradients in another order than DDP's all-reduce, so the numbers
# agree to rounding, compounded over 4 AdamW steps at a large learning rate (measured: at most 1.2e-5 relative,
# on grad_norm; final weights within 5e-7)
RELATIVE, ABSOLUTE = 1e-4, 1e-5
EPS32 = torch.finfo(torch.float32).eps  # 2^-23: twice float32's unit roundoff u = 2^-24
PER_TERM = 4  # a log-prob term's own rounding, in units of u (logits, log-softmax over 49152): measured <= 2.73 u


def summed_logp_tolerance(record: dict, key: str, sequences: dict[str, int]) -> float:
    """How far two float32 runs may put ``probe_<name>_logp_delta`` apart by rounding alone.

    The field is S_N - S_0, S = probe_<name>_logp: the mean over m sequences of a float32 sum of n response-token
    log-probs (index_add, one token after another), all <= 0, so the terms' magnitudes add up to |S| itself.
    Summed in any order, first order in u (Higham, Accuracy and Stability of Numerical Algorithms, 4.2):
        |S_float32 - S| <= (PER_TERM + (n - 1) + (m - 1) + 1) u |S|   (terms, per-sequence sum, mean's sum, division)
    Two runs that round differently (the one-process run scores the probes 8 sequences per forward, FSDP 4 per
    process: other shapes, and on hosts whose kernels block by shape, other accumulation orders; or the last-bit
    weight differences) are each within that of S, so apart by twice it, for S_N and again for S_0:
        tolerance = (PER_TERM + n + m - 1) * EPS32 * (|S_N| + |S_0|)
    The delta's own size does not set its rounding: it is a difference of two sums some 1000x larger. For the 8 sampled
    128-token probe responses at step 3 (S_3 = -1382.14, S_0 = -1381.16): 139 * 1.19e-7 * 2763.3 = 0.046. One
    float32 ulp of S there is 2^-13 = 1.22e-4, and RELATIVE * |delta| (-0.977) = 9.8e-5 was less than one: an
    AMX/AVX-512-FP16 host failed on exactly one ulp (-0.9774169921875 vs -0.977294921875). Measured on the
    step-4 models (AMD EPYC): float32 vs float64 1.8 u|S|, another summation order (reversed, pairwise) 1.5-3 u|S|,
    the one-process vs FSDP weights moving S by 1.5e-7 (samples) and 1.3e-6 (greedy) in float64, which ABSOLUTE
    covers. A real divergence is far outside: one step apart, the samples delta moves by 0.22-0.52 (greedy 1.9-20).
    n: |S / probe_<name>_logp_per_token| (the tokens per sequence, exactly when all have the same count; a mean of
    the counts weighted by the per-token log-probs otherwise); S_0: S_N - delta; m: from the run's configuration.
    """
    name = key[len("probe_"):-len("_logp_delta")]
    now, per_token = record[f"probe_{name}_logp"], record[f"probe_{name}_logp_per_token"]
    start = now - record[key]
    tokens = abs(now / per_token)
    return (PER_TERM + tokens + sequences[name] - 1) * EPS32 * (abs(now) + abs(start))


def probe_sequences(run: Path) -> dict[str, int]:
    """How many sequences each probe group scores (the m of ``summed_logp_tolerance``), from the run's config."""
    extra = json.loads((run / "run_config.json").read_text())["extra"]
    responses = {name: extra["probe_responses"][name] for name in ("greedy", "samples")}
    return {"chosen": extra["probe_size"], "rejected": extra["probe_size"], **responses}


def assert_same_metrics(expected: list[dict], got: list[dict], sequences: dict[str, int]) -> None:
    """Every float of every record agrees to RELATIVE/ABSOLUTE; the summed probe log-probs' deltas also get their
    float32 rounding (``summed_logp_tolerance``), without which a one-ulp difference of S fails them."""
    for want, have in zip(expected, got, strict=True):
        assert comparable(have).keys() == comparable(want).keys()
        for key, value in comparable(want).items():
            tolerance = ABSOLUTE
            if key.startswith("probe_") and key.endswith("_logp_delta"):
                tolerance += summed_logp_tolerance(want, key, sequences)
            assert have[key] == pytest.approx(value, rel=RELATIVE, abs=tolerance), (want["step"], key)


WORKER = """
import json, os, sys, time
from pathlib import Path

from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

import dpo3d.training.dpo as dpo
import dpo3d.training.run_folder as run_folder
from dpo3d.training import reference as ref_cache
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import LoopCallbacks


def fsdp_on_cpu(*args, **kwargs):
    accelerator = Accelerator(*args, **kwargs)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", state_dict_type="FULL_STATE_DICT")
    return accelerator


run_folder.Accelerator = fsdp_on_cpu
settings = json.loads(sys.argv[1])
original_reference = dpo._reference_logps


def reference_after_main(config, *args):
    # the race CI once lost, made certain: process 1 finds the reference the main process stored and skips its
    # own (unsharded) reference pass, so only the main process has scored with the bare model before training
    if int(os.environ["RANK"]) == 1:
        while not (Path(config.loop.out) / ref_cache.CACHE_FILE).exists():
            time.sleep(0.05)
    return original_reference(config, *args)


dpo._reference_logps = reference_after_main


class Stop(Exception):
    pass


def stop_at_3(step):
    if step == 3:
        raise Stop


def config(resume):
    return DPORunConfig(**settings["run"], loop=LoopConfig(**settings["loop"], resume=resume))


try:
    train_dpo(config(False), LoopCallbacks(on_step=stop_at_3))
except Stop:
    pass
checkpoint = Path(settings["loop"]["out"]) / "checkpoint"
assert (checkpoint / "model.safetensors").is_file(), "the step-2 checkpoint"
result = train_dpo(config(True))
print("distributed type:", AcceleratorState().distributed_type)
"""


def write_pairs(path: Path, n: int = 8) -> Path:
    rows = [{"prompt": f"Question {i}: pick a colour.", "chosen": f"Blue, number {i}.",
             "rejected": f"I refuse to answer question {i} at all."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def settings(tmp_path: Path, model_dir: Path, out: str, batch_size: int) -> dict:
    pairs = str(write_pairs(tmp_path / "pairs.jsonl"))
    return {
        "run": {"model": str(model_dir), "pairs": pairs, "eval_pairs": pairs, "eval_every": 2, "probe_size": 4},
        "loop": {"out": str(tmp_path / out), "lr": 5e-3, "batch_size": batch_size, "grad_accum": 2, "max_steps": STEPS,
                 "warmup_ratio": 0.0, "schedule": "constant", "seed": 0, "save_every": 2, "cpu": True},
    }


def comparable(record: dict) -> dict:
    # the step-0 noise floor measures rounding, which the batch shapes of each launch set: not a training result
    skip = ("examples_per_s", "epoch", "probe_noise_nats", "probe_noise_nats_per_token")
    return {k: v for k, v in record.items() if isinstance(v, float) and k not in skip}


@pytest.mark.skipif(not LAUNCHER.exists(), reason="accelerate CLI")
def test_fsdp_two_processes_train_resume_and_save_like_one(tmp_path, tiny_model_dir):
    one = settings(tmp_path, tiny_model_dir, "one", batch_size=PROCESSES * 2)
    single = train_dpo(DPORunConfig(**one["run"], loop=LoopConfig(**one["loop"])))

    two = settings(tmp_path, tiny_model_dir, "two", batch_size=2)
    (tmp_path / "worker.py").write_text(WORKER)
    result = subprocess.run(
        [str(LAUNCHER), "launch", *port_args(), "--multi_gpu", "--num_processes", str(PROCESSES), "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(tmp_path / "worker.py"), json.dumps(two)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed type: DistributedType.FSDP" in result.stdout

    fsdp_run = tmp_path / "two"
    assert json.loads((fsdp_run / "run_config.json").read_text())["processes"] == PROCESSES
    expected, got = read_log(single.out / "metrics.jsonl"), read_log(fsdp_run / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(STEPS + 1))  # resumed at 2
    assert expected[-1]["probe_chosen_logp_delta"] != 0 and "eval_loss" in expected[-1]  # it trained, it evaluated
    assert_same_metrics(expected, got, probe_sequences(single.out))

    # the final model: whole tensors (gathered, not shards), the one-process weights, the same outputs
    weights, reference = load_file(fsdp_run / "model.safetensors"), load_file(single.out / "model.safetensors")
    assert weights.keys() == reference.keys()
    for key, tensor in reference.items():
        assert weights[key].shape == tensor.shape, key
        assert torch.allclose(weights[key], tensor, rtol=RELATIVE, atol=ABSOLUTE), key
    assert not (fsdp_run / "checkpoint").exists()
    from dpo3d.models.loading import load_causal_lm

    ids = torch.tensor([[1, 17, 300, 4000, 12, 9]])
    with torch.no_grad():
        logits = load_causal_lm(str(fsdp_run))(input_ids=ids).logits
        reference_logits = load_causal_lm(str(single.out))(input_ids=ids).logits
    assert torch.allclose(logits, reference_logits, rtol=RELATIVE, atol=1e-4)


@pytest.mark.parametrize(("variable", "got"), [("ACCELERATE_USE_FSDP", DistributedType.MULTI_CPU),
                                               ("ACCELERATE_USE_FSDP", DistributedType.NO),
                                               ("ACCELERATE_USE_DEEPSPEED", DistributedType.MULTI_CPU)])
def test_a_launch_that_asked_for_sharding_but_did_not_get_it_is_refused(monkeypatch, variable, got):
    monkeypatch.setenv(variable, "true")
    with pytest.raises(ValueError, match="only on GPUs"):
        sharding.check_launch(SimpleNamespace(distributed_type=got))


def test_a_plain_launch_passes_the_check(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    sharding.check_launch(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))


def fake_deepspeed(stage: int, processes: int = 2) -> SimpleNamespace:
    config = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": 1,
              "gradient_clipping": 1.0, "zero_optimization": {"stage": stage}}
    plugin = SimpleNamespace(deepspeed_config=config, zero_stage=stage)
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=processes,
                           state=SimpleNamespace(deepspeed_plugin=plugin), gradient_accumulation_steps=1)


def test_deepspeed_gets_the_loops_micro_batch_accumulation_and_clipping_before_prepare():
    accelerator = fake_deepspeed(stage=2)
    sharding.configure_deepspeed(accelerator, micro_batch=3, grad_accum=4, max_grad_norm=None)
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    # 3 per micro-batch x 4 micro-batches x 2 processes; no --max-grad-norm: DeepSpeed's 0 (no clipping)
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"], config["train_batch_size"],
            config["gradient_clipping"]) == (3, 4, 24, 0.0)
    assert accelerator.gradient_accumulation_steps == 4  # accelerate's accumulate() marks every 4th micro-batch


def test_who_probes_follows_the_sharding():
    assert not sharding.shards_parameters(fake_deepspeed(stage=2))  # ZeRO-2: whole weights on every process
    assert sharding.shards_parameters(fake_deepspeed(stage=3))
    with pytest.raises(ValueError, match="not supported under DeepSpeed"):
        sharding.check_supported(fake_deepspeed(stage=2), save_every=2, resume=False)
    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)
    sharding.check_supported(fsdp, save_every=2, resume=True)  # FSDP checkpoints and resumes
    with pytest.raises(ValueError, match="--grad-split-every"):
        sharding.check_supported(fsdp, save_every=0, resume=False, probe_gradients=True)
    with pytest.raises(ValueError, match="LoRA"):
        sharding.check_supported(fsdp, save_every=0, resume=False, adapter=True)
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    sharding.check_supported(ddp, save_every=2, resume=True, probe_gradients=True, adapter=True)


def test_the_loop_knows_which_probes_take_parameter_gradients():
    from dpo3d.training.dpo_task import DPOTask
    from dpo3d.training.rm import RMTask
    from dpo3d.training.sft import SFTTask

    assert DPOTask.probe_gradients.fget(SimpleNamespace(settings=SimpleNamespace(grad_split_every=2)))
    assert not DPOTask.probe_gradients.fget(SimpleNamespace(settings=SimpleNamespace(grad_split_every=0)))
    assert SFTTask.probe_gradients is False and RMTask.probe_gradients is False  # SFT, reward models


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_ppo_refuses_sharding_and_says_to_use_ddp(kind):
    from dpo3d.training.sharding import check_ppo_supported

    with pytest.raises(ValueError, match="ddp.yaml"):
        check_ppo_supported(SimpleNamespace(distributed_type=kind))
    check_ppo_supported(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
