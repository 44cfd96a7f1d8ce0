"""The toy's machinery: scenarios, pairs, step 1, the stacked MLP, Adam, gradients, determinism, records."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from dpo3d.data.records import RecordError
from dpo3d.losses import LOSSES, bind_loss
from dpo3d.toy.model import Adam, ToyMLP
from dpo3d.toy.outputs import metric_records, summary
from dpo3d.toy.scenarios import (
    CHOSEN,
    REJECTED,
    SCENARIOS,
    UNSEEN,
    class_distribution,
    draw_pairs,
    load_distribution,
    select_scenarios,
)
from dpo3d.toy.train import ToyConfig, ToyDiverged, pools_over_batch, run_toy


def small(**overrides) -> ToyConfig:
    settings = {"scenarios": (SCENARIOS["1"], SCENARIOS["3"]), "losses": ("dpo",), "steps": 40, "sft_steps": 100}
    return ToyConfig(**{**settings, **overrides})


def test_scenarios_hold_the_documented_probabilities():
    expected = {"1": (0.30, 0.12), "2": (0.02, 0.12), "3": (0.30, 0.02), "4": (0.02, 0.02)}
    for name, (chosen, rejected) in expected.items():
        probs = SCENARIOS[name].tensor()
        torch.testing.assert_close(probs.sum(-1), torch.ones(4, dtype=torch.float64))
        for prompt in range(4):
            assert probs[prompt, CHOSEN[prompt]] == pytest.approx(chosen)
            assert probs[prompt, list(REJECTED)].tolist() == pytest.approx([rejected] * 4)
            assert probs[prompt, list(UNSEEN)].tolist() == pytest.approx([0.05, 0.05])
    with pytest.raises(ValueError, match="must be > 0"):
        class_distribution(0.5, 0.12)


def test_custom_distribution_files(tmp_path):
    by_class = tmp_path / "mild.json"
    by_class.write_text(json.dumps({"chosen": 0.4, "rejected": 0.1}))
    scenario = load_distribution(by_class)
    assert scenario.name == "mild" and scenario.tensor()[2, 2] == pytest.approx(0.4)
    rows = [[0.1] * 10 for _ in range(4)]
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"name": "flat", "probs": rows}))
    torch.testing.assert_close(load_distribution(full).tensor(), torch.tensor(rows, dtype=torch.float64))

    for content, problem in [
        ("{not json", "not valid JSON"),
        (json.dumps({"probs": rows[:3]}), "4 rows of 10"),
        (json.dumps({"probs": [[0.2] * 10] * 4}), "sums to 2"),
        (json.dumps({"probs": [[0.0] + [1 / 9] * 9] * 4}), "must be > 0"),
        (json.dumps({"chosen": 0.9, "rejected": 0.1}), "must be > 0"),
        (json.dumps({"rejected": 0.1}), "missing field"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(RecordError, match=problem) as error:
            load_distribution(bad)
        assert str(bad) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown scenario 7"):
        select_scenarios(["7"])


def test_pairs_are_drawn_as_the_paper_builds_them():
    pairs = draw_pairs(3, "distinct", seed=5)
    assert len(pairs) == 12 and pairs.prompt == tuple(p for p in range(4) for _ in range(3))
    assert all(chosen == CHOSEN[prompt] for prompt, chosen in zip(pairs.prompt, pairs.chosen, strict=True))
    for prompt in range(4):
        rejected = [r for p, r in zip(pairs.prompt, pairs.rejected, strict=True) if p == prompt]
        assert len(set(rejected)) == 3 and set(rejected) <= set(REJECTED)
    assert draw_pairs(2, "random", seed=1) == draw_pairs(2, "random", seed=1)
    assert any(draw_pairs(4, "random", seed=s) != draw_pairs(4, "random", seed=0) for s in range(1, 4))
    with pytest.raises(ValueError, match="at most 4"):
        draw_pairs(5, "distinct")


def test_step_1_reaches_the_scenario_distribution():
    result = run_toy(small(steps=1, sft_steps=ToyConfig().sft_steps))
    assert (result.sft_kl < 1e-10).all()
    torch.testing.assert_close(result.reference_probs, result.targets, rtol=0, atol=1e-6)
    # step 2 starts from the reference: step 0 of the history is the step-1 model
    torch.testing.assert_close(result.history.probs[:, 0], result.reference_probs)
    assert result.history.margins[:, 0].abs().max() < 1e-12  # log(softmax) against log_softmax


def test_autograd_gradients_agree_with_the_registry():
    losses = ("dpo", "flex", "dpo-sft", "ipo", "bco", "simpo", "slic", "nca")
    result = run_toy(small(losses=losses, steps=25, pairs_per_prompt=2))
    h = result.history
    for measured, analytic in [
        (h.autograd_grad_chosen, h.log_abs_grad_chosen),
        (h.autograd_grad_rejected, h.log_abs_grad_rejected),
    ]:
        zero = torch.isinf(analytic)
        assert (measured[zero] == 0).all()
        torch.testing.assert_close(measured[~zero].abs().log(), analytic[~zero], rtol=0, atol=1e-9)
    assert (~torch.isinf(h.log_abs_grad_chosen)).sum() > 0.9 * h.log_abs_grad_chosen.numel()


def test_a_run_is_the_same_alone_or_stacked():
    stacked = run_toy(small(losses=("dpo", "bco", "ipo"), steps=30))
    alone = run_toy(small(scenarios=(SCENARIOS["3"],), losses=("bco",), steps=30))
    r = next(r for r, run in enumerate(stacked.runs) if run.run_id == "s3-bco")
    torch.testing.assert_close(stacked.history.probs[r], alone.history.probs[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(stacked.history.loss[r], alone.history.loss[0], rtol=0, atol=1e-12)


def test_only_the_losses_with_a_batch_statistic_pool_over_their_batch():
    # bco shifts by the batch's mean reward; aot and aot-unpaired sort the batch's log-ratios; beta-dpo's β and
    # filter read the batch's mean gap; kto's reference point z0 is the batch's mean log-ratio
    assert sorted(name for name in LOSSES if pools_over_batch(bind_loss(name))) == [
        "aot", "aot-unpaired", "bco", "beta-dpo", "kto"]


def test_adam_is_torch_adam():
    model = ToyMLP.init(2, 8, seed=0)
    twin = ToyMLP([w.detach().clone().requires_grad_(True) for w in model.weights])
    ours, theirs = Adam(model.weights, lr=1e-2), torch.optim.Adam(twin.weights, lr=1e-2)
    for _ in range(20):
        ours.step(list(torch.autograd.grad(model.log_probs()[:, :, 0].sum(), model.weights)))
        theirs.zero_grad()
        twin.log_probs()[:, :, 0].sum().backward()
        theirs.step()
    for a, b in zip(model.weights, twin.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_same_seed_same_metrics():
    config = small(losses=("dpo", "flex"), steps=15, pairs_per_prompt=2)
    first, second = list(metric_records(run_toy(config))), list(metric_records(run_toy(config)))
    assert json.dumps(first) == json.dumps(second)
    other = list(metric_records(run_toy(small(losses=("dpo", "flex"), steps=15, pairs_per_prompt=2, seed=1))))
    assert json.dumps(other) != json.dumps(first)


def test_metric_records_and_summary_shape():
    result = run_toy(small(losses=("dpo", "hinge"), steps=5))
    records = list(metric_records(result))
    assert len(records) == 2 * 2 * 6
    first = records[0]
    assert (first["run"], first["step"], first["loss_name"]) == ("s1-dpo", 0, "dpo")
    assert first["loss"] == pytest.approx(math.log(2))
    assert len(first["probs"]) == 4 and all(len(row) == 10 for row in first["probs"])
    pair = first["pairs"][0]
    assert {"prompt", "chosen", "rejected", "x1", "x2", "log_abs_grad_x1", "log_abs_grad_x2"} <= set(pair)
    assert pair["chosen"] == pair["prompt"] and 5 <= pair["rejected"] <= 8  # 1-based, as the paper
    assert pair["x1"] == pytest.approx(first["probs"][pair["prompt"] - 1][pair["chosen"] - 1])
    text = json.dumps(summary(result), allow_nan=False)
    assert '"peak_chosen"' in text and '"sft_kl"' in text


def test_an_underflowing_run_stops_with_a_clear_error():
    with pytest.raises(ToyDiverged, match="underflowed"):
        run_toy(small(scenarios=(SCENARIOS["1"],), steps=200, lr=0.3))


def test_the_command_reaches_every_registry_hyperparameter():
    # every option of every loss goes through --loss-arg (the parser train-dpo shares)
    from dpo3d_cli import loss_options, toy

    parameters = inspect.signature(inspect.unwrap(toy.command)).parameters
    assert "loss_args" in parameters
    for name, spec in LOSSES.items():
        for key, default in spec.defaults.items():
            value = "true" if isinstance(default, bool) else "1" if isinstance(default, int) else "0.25"
            (bound,) = loss_options.bind_cli_losses({"loss_args": [f"{key}={value}"]}, [name])
            assert bound.options == {key: type(default)(True if value == "true" else float(value))}


def test_scenarios_on_two_processes_give_the_same_numbers():
    from dpo3d.toy.parallel import run_toy_parallel

    config = small(losses=("dpo", "aot", "sft"), steps=8)
    one, two = run_toy(config), run_toy_parallel(config, 2)
    assert [run.run_id for run in two.runs] == [run.run_id for run in one.runs]
    assert [run.scenario_index for run in two.runs] == [run.scenario_index for run in one.runs]
    for name in ("probs", "loss", "log_abs_grad_chosen", "log_abs_grad_rejected", "autograd_grad_chosen"):
        assert torch.equal(getattr(two.history, name), getattr(one.history, name)), name
    assert torch.equal(two.reference_probs, one.reference_probs) and two.stopped_at == one.stopped_at


def test_a_run_unbounded_below_stops_alone():
    # robust DPO's loss falls without bound (its -ε·(-log σ(-h)) term is linear in h): at lr 0.01 its
    # x2 underflows within 200 steps while DPO's run goes on; robust is frozen at its last good step
    result = run_toy(small(scenarios=(SCENARIOS["1"],), losses=("dpo", "robust"), steps=200, lr=0.01))
    dpo, robust = result.stopped_at
    assert dpo is None and robust is not None and 0 < robust < 200
    history = result.history
    assert torch.equal(history.probs[1, robust + 1], history.probs[1, -1])  # nothing moved after the stop
    assert not torch.equal(history.probs[0, robust + 1], history.probs[0, -1])
