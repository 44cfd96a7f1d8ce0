"""The 3D guard policy (dpo3d.watch.guard) on detector events worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dpo3d.losses import PreferenceBatch, bind_loss, get_loss
from dpo3d.watch.detector import ThreeDDetector
from dpo3d.watch.guard import BestTracker, Guard, GuardSettings, watch


def event(name: str, step: int) -> dict:
    return {"property": name, "step": step, "message": f"step {step}: {name}"}


def record(step: int, chosen: float = 0.0, rejected: float = 0.0, unseen: float = 0.0) -> dict:
    return {
        "step": step,
        "probe_chosen_logp_delta": chosen,
        "probe_rejected_logp_delta": rejected,
        "probe_unseen_logp_delta": unseen,
    }


def test_sft_adds_the_term_then_doubles_it_up_to_the_cap():
    guard = Guard.for_loss("sft", bind_loss("dpo", {"beta": 0.1}))
    assert (guard.loss_name, guard.hyperparameters) == ("dpo", {"beta": 0.1})
    assert guard.update(record(0), []) == []
    (action,) = guard.update(record(3), [event("drastic_drop", 3)])
    assert action.record() == {
        "step": 3,
        "guard": "sft",
        "trigger": "drastic_drop",
        "changes": {"sft_weight": {"old": 0.0, "new": 0.1}, "loss": {"old": "dpo", "new": "dpo:1,sft:0.1"}},
        "message": "step 3: guard sft on drastic drop: sft_weight 0 → 0.1, loss dpo → dpo:1,sft:0.1",
    }
    assert guard.loss_name == "dpo:1,sft:0.1" and guard.hyperparameters == {"beta": 0.1}
    # each later warning doubles α: 0.2, 0.4, 0.8, then the cap 1.0, then nothing is left to do
    names = []
    for step in range(4, 9):
        actions = guard.update(record(step), [event("degradation", step)])
        names.append(guard.loss_name if actions else None)
    assert names == ["dpo:1,sft:0.2", "dpo:1,sft:0.4", "dpo:1,sft:0.8", "dpo:1,sft:1", None]
    assert len(guard.actions) == 5 and not guard.should_stop


def test_the_sft_mixture_is_dpo_sft():
    # one pair: logp_w = -1, logp_l = -2, both references -1.5; h = 0.1·(0.5 + 0.5) = 0.1
    # -log σ(0.1) = log(1 + e^-0.1) = 0.6443966600; + α·(-logp_w) = 0.1·1 → 0.7443966600
    batch = PreferenceBatch(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]))
    guard = Guard.for_loss("sft", bind_loss("dpo", {"beta": 0.1}))
    guard.update(record(1), [event("drastic_drop", 1)])
    mixed = guard.loss(batch).losses  # the guard's new bound loss
    assert float(mixed) == pytest.approx(math.log(1 + math.exp(-0.1)) + 0.1, abs=1e-7)
    assert float(mixed) == pytest.approx(float(get_loss("dpo-sft")(batch, beta=0.1, sft_weight=0.1).losses), abs=1e-7)


def test_sft_raises_a_loss_s_own_weight_and_leaves_it_at_the_cap():
    guard = Guard.for_loss("sft", bind_loss("dpo-sft", {"beta": 0.1, "sft_weight": 0.3}))
    (action,) = guard.update(record(2), [event("drastic_drop", 2)])
    assert action.changes == {"sft_weight": (0.3, 0.6)} and guard.loss_name == "dpo-sft"
    assert guard.hyperparameters == {"beta": 0.1, "sft_weight": 0.6}
    # dpo-sft's default α = 1 is the cap already: a warning changes nothing, and no action is logged
    at_cap = Guard.for_loss("sft", bind_loss("dpo-sft"))
    assert at_cap.update(record(2), [event("drastic_drop", 2)]) == [] and at_cap.loss is at_cap.base
    # a mixture with an SFT part: its weight is raised
    mixture = Guard.for_loss("sft", bind_loss("dpo:0.8,sft:0.25"))
    mixture.update(record(1), [event("dispersion", 1)])
    assert mixture.loss_name == "dpo:0.8,sft:0.5"


def test_flex_turns_dpo_into_flex_and_halves_beta_l_down_to_the_floor():
    guard = Guard.for_loss("flex", bind_loss("dpo", {"beta": 0.1}))
    (action,) = guard.update(record(5), [event("drastic_drop", 5)])
    assert action.changes == {"loss": ("dpo", "flex"), "beta_rejected": (0.1, 0.05)}
    assert guard.loss_name == "flex"
    assert get_loss("flex").select(guard.hyperparameters) == {"beta_chosen": 0.1, "beta_rejected": 0.05}
    betas = []
    for step in range(6, 10):
        actions = guard.update(record(step), [event("degradation", step)])
        betas.append(actions[0].changes["beta_rejected"][1] if actions else None)
    # 0.05 → 0.025 → 0.0125 → the floor 0.1·β_w = 0.01 → nothing left
    assert betas[:3] == pytest.approx([0.025, 0.0125, 0.01]) and betas[3] is None


def test_a_switch_makes_a_new_bound_loss_and_leaves_the_run_s_own():
    base = bind_loss("dpo", {"beta": 0.2})
    guard = Guard.for_loss("flex", base)
    assert guard.loss is base
    guard.update(record(5), [event("drastic_drop", 5)])
    assert (guard.loss.name, guard.loss.options) == ("flex", {"beta_chosen": 0.2, "beta_rejected": 0.1})
    assert (base.name, base.options) == ("dpo", {"beta": 0.2}) and guard.base is base
    # the new loss computes flex-β with β_w = 0.2, β_l = 0.1 (one pair: a = 0.5, b = -0.5)
    batch = PreferenceBatch(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]))
    assert float(guard.loss(batch).losses) == pytest.approx(math.log(1 + math.exp(-(0.2 * 0.5 + 0.1 * 0.5))), abs=1e-7)


def test_flex_on_flex_starts_from_its_beta_l():
    guard = Guard.for_loss("flex", bind_loss("flex", {"beta_chosen": 0.2, "beta_rejected": 0.08}))
    (action,) = guard.update(record(1), [event("drastic_drop", 1)])
    assert action.changes == {"beta_rejected": (0.08, 0.04)}


def test_stop_waits_for_harm_and_keeps_the_best_chosen_step():
    guard = Guard.for_loss("stop", bind_loss("dpo"))
    assert guard.update(record(0, chosen=0.0), []) == []
    # a drastic drop alone does not stop the run: the chosen may still be rising
    assert guard.update(record(10, chosen=1.5, rejected=-9.0), [event("drastic_drop", 10)]) == []
    assert guard.update(record(20, chosen=2.0, rejected=-20.0), []) == []
    (action,) = guard.update(record(30, chosen=0.5, rejected=-40.0), [event("degradation", 30)])
    assert guard.should_stop and action.changes == {"stop": (False, True), "keep_step": (None, 20)}
    assert (guard.best.step, guard.best.value) == (20, 2.0)
    assert guard.update(record(40), [event("dispersion", 40)]) == []  # stopped: nothing more


def test_one_action_per_record_and_other_events_are_ignored():
    guard = Guard.for_loss("sft", bind_loss("ipo"))
    actions = guard.update(record(4), [event("drastic_drop", 4), event("degradation", 4)])
    assert len(actions) == 1 and actions[0].trigger == "drastic_drop" and guard.loss_name == "ipo:1,sft:0.1"
    only_degradation = Guard.for_loss("sft", bind_loss("dpo"), settings=GuardSettings(sft_on=("degradation",)))
    assert only_degradation.update(record(4), [event("drastic_drop", 4)]) == []


def test_bad_guards_are_clear_errors():
    with pytest.raises(ValueError, match="unknown guard 'pause'"):
        Guard.for_loss("pause", bind_loss("dpo"))
    with pytest.raises(ValueError, match="ipo does neither"):
        Guard.for_loss("flex", bind_loss("ipo"))
    with pytest.raises(ValueError, match="unknown loss"):
        Guard.for_loss("sft", bind_loss("nope"))
    with pytest.raises(ValueError, match="unknown properties"):
        GuardSettings(stop_on=("drop",))
    with pytest.raises(ValueError, match="sft_cap >= sft_weight"):
        GuardSettings(sft_weight=2.0)
    with pytest.raises(ValueError, match="keep-best 'margin'"):
        BestTracker.for_metric("margin")


def test_best_tracker_keeps_the_first_of_equal_peaks():
    best = BestTracker.for_metric("chosen")
    for step, chosen in [(0, 0.0), (1, 0.7), (2, 0.7), (3, 0.2)]:
        best.update(record(step, chosen=chosen))
    assert (best.step, best.value) == (1, 0.7)
    assert not best.update({"step": 4, "loss": 0.1})  # a record without probes changes nothing


def test_watch_feeds_the_real_detector_then_the_guard():
    # test_detector's drastic drop: the rejected falls 2 nats while the chosen rises 0.2 (10×)
    detector, guard = ThreeDDetector(), Guard.for_loss("sft", bind_loss("dpo"))
    rows = [(0, 0, 0), (0.2, -2.0, 0), (0.3, -4.0, 0)]
    fired = [watch(detector, guard, record(step, *row)) for step, row in enumerate(rows)]
    assert [len(warnings) for warnings, _ in fired] == [0, 1, 0]
    assert [[a.step for a in actions] for _, actions in fired] == [[], [1], []]
    assert watch(ThreeDDetector(), None, record(0)) == ([], [])
