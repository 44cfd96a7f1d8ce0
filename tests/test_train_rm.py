"""train-rm on tiny models: it learns a separable preference, its gradients are symmetric,
it resumes, its checkpoint is a sequence-classification folder that `judge rm` loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo3d.data.records import read_records
from dpo3d.data.run_log import read_log
from dpo3d.training.compare import load_curve, steadiness
from dpo3d.training.config import LoopConfig
from dpo3d.training.rm import RMRunConfig, train_rm
from dpo3d.training.run_folder import LoopCallbacks

from .commands import dpo3d
from .test_train_dpo import write_pairs

ROOT = Path(__file__).resolve().parents[1]


def rm_config(tmp_path, model_dir, steps=30, out="rm", **loop) -> RMRunConfig:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    settings = {"lr": 3e-3, "batch_size": 4, "grad_accum": 1, "max_steps": steps, "warmup_ratio": 0.0,
                "schedule": "constant", "seed": 0, **loop}
    return RMRunConfig(model=str(model_dir), pairs=pairs, eval_pairs=pairs, eval_every=10,
                       loop=LoopConfig(out=tmp_path / out, **settings))


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("rm")
    train_rm(rm_config(tmp, tiny_model_dir))
    return tmp / "rm"


def test_learns_a_separable_preference(trained_rm):
    records = read_log(trained_rm / "metrics.jsonl")
    evals = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [0, 10, 20, 30]
    assert evals[-1] == 1.0
    assert records[-1]["margin"] > records[1]["margin"]
    assert records[-1]["loss"] < 0.5 * records[1]["loss"]


def test_reward_gradients_are_equal_and_opposite(trained_rm):
    for record in read_log(trained_rm / "metrics.jsonl")[1:]:
        assert record["reward_grad_chosen"] == pytest.approx(-record["reward_grad_rejected"], rel=1e-6)
        assert record["log_grad_chosen"] == pytest.approx(record["log_grad_rejected"], rel=1e-6)
        assert record["reward_grad_chosen"] < 0  # the loss falls as the chosen reward rises


def test_measured_reward_gradients_match_the_closed_form(tmp_path, tiny_model_dir):
    import torch

    from dpo3d.judges.reward_model import load_reward_model
    from dpo3d.pairs.pair_set import load_pairs
    from dpo3d.training.rm import RMTask

    model, tokenizer = load_reward_model(str(tiny_model_dir))
    pairs = load_pairs(write_pairs(tmp_path / "pairs.jsonl"), tokenizer, 128, unseen_limit=0)
    loss, metrics = RMTask(pairs, tokenizer.pad_token_id, margin=0.3).loss(model, [0, 3, 5])
    closed = -(1 - torch.sigmoid(metrics["margin"] - 0.3))  # ∂/∂r_w of -log σ(r_w - r_l - m)
    assert torch.allclose(metrics["reward_grad_chosen"], closed, atol=1e-6)
    assert torch.allclose(metrics["reward_grad_rejected"], -closed, atol=1e-6)
    assert loss.requires_grad  # the measurement left the graph for the optimizer step


def test_checkpoint_is_a_sequence_classification_folder_judge_rm_loads(trained_rm, tmp_path):
    config = json.loads((trained_rm / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert config["pad_token_id"] != config["eos_token_id"]  # pooling lands on the end-of-turn token
    candidates = tmp_path / "candidates.jsonl"
    rows = [{"id": "q", "prompt": [{"role": "user", "content": "Question 1: pick a colour."}], "completion": text,
             "source": "test"} for text in ("Blue, number 1.", "I refuse to answer question 1 at all.")]
    candidates.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judged = dpo3d("judge", "rm", str(candidates), "--rm", str(trained_rm), "-o", str(tmp_path / "judged.jsonl"))
    assert judged.returncode == 0, judged.stderr
    out = read_records(tmp_path / "judged.jsonl")
    assert [r["judge"] for r in out] == ["rm:rm", "rm:rm"]
    assert out[0]["score"] > out[1]["score"]  # the trained preference
    assert out[0]["verdict"] == {"reward": out[0]["score"]}
    pairs = dpo3d("build-pairs", str(tmp_path / "judged.jsonl"), "-o", str(tmp_path / "pairs.jsonl"))
    assert pairs.returncode == 0, pairs.stderr
    assert read_records(tmp_path / "pairs.jsonl")[0]["chosen"] == "Blue, number 1."


def test_judge_rm_refuses_a_causal_lm(tiny_model_dir, tmp_path):
    candidates = tmp_path / "c.jsonl"
    candidates.write_text(json.dumps({"prompt": "hi", "completion": "there"}) + "\n")
    result = dpo3d("judge", "rm", str(candidates), "--rm", str(tiny_model_dir))
    assert result.returncode == 2
    assert "not a reward-model folder" in result.stderr


class Stop(Exception):
    pass


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, tiny_model_dir):
    whole = train_rm(rm_config(tmp_path, tiny_model_dir, steps=6, out="whole"))

    def crash(step):
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        train_rm(rm_config(tmp_path, tiny_model_dir, steps=6, out="cut", save_every=3), LoopCallbacks(on_step=crash))
    resumed = train_rm(rm_config(tmp_path, tiny_model_dir, steps=6, out="cut", save_every=3, resume=True))
    strip = lambda path: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in read_log(path)]  # noqa: E731
    assert resumed.steps == whole.steps == 6
    assert strip(resumed.out / "metrics.jsonl") == strip(whole.out / "metrics.jsonl")


def test_bad_pairs_stop_with_one_line(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    result = dpo3d("train-rm", "--pairs", str(bad), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "bad.jsonl:1: missing field 'rejected'" in result.stderr
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_compare_draws_fig4_and_measures_steadiness(trained_rm, tmp_path):
    curve = load_curve(trained_rm, "eval_accuracy")
    assert curve.task == "rm" and curve.total_steps == 30 and curve.progress == [0, 1 / 3, 2 / 3, 1]
    result = dpo3d("compare", str(trained_rm), str(trained_rm), "--label", "RM", "--label", "again", "-o", str(tmp_path / "fig.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert "against" in result.stderr and "RM" in result.stderr


def test_steadiness_by_hand():
    s = steadiness([0.5, 0.7, 0.6, 0.9])
    # moves +0.2, -0.1, +0.3: travelled 0.6, of which 0.1 went down
    assert s["change"] == pytest.approx(0.4) and s["max"] == 0.9 and s["against_share"] == pytest.approx(1 / 6)
    # a falling loss: the rise is what goes against the trend
    assert steadiness([0.7, 0.3, 0.4, 0.1])["against_share"] == pytest.approx(0.1 / 0.8)
    assert steadiness([0.5])["against_share"] == 0.0


def test_the_last_step_is_always_evaluated(tmp_path, tiny_model_dir):
    config = rm_config(tmp_path, tiny_model_dir, steps=7)
    config.eval_every = 3
    result = train_rm(config)
    assert [r["step"] for r in read_log(result.out / "metrics.jsonl") if "eval_accuracy" in r] == [0, 3, 6, 7]


def test_rm_curves_figure(trained_rm, tmp_path):
    from dpo3d.training.plots import plot_panels

    target = plot_panels(trained_rm, "rm", tmp_path / "rm.png")
    assert target.stat().st_size > 20_000


def test_the_new_head_is_seeded_whatever_ran_before(tmp_path, tiny_model_dir):
    import torch

    first = train_rm(rm_config(tmp_path, tiny_model_dir, steps=1, out="a"))
    torch.rand(100)  # other work in the same process moves the global generator
    second = train_rm(rm_config(tmp_path, tiny_model_dir, steps=1, out="b"))
    assert read_log(first.out / "metrics.jsonl")[0] == read_log(second.out / "metrics.jsonl")[0]
