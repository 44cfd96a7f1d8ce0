"""The live 3D detector on hand-made metric sequences."""

from __future__ import annotations

from dpo3d.training.detector import ThreeDDetector


def feed(rows):
    detector = ThreeDDetector()
    fired = []
    for step, (chosen, rejected, unseen) in enumerate(rows):
        record = {"step": step, "probe_chosen_logp_delta": chosen, "probe_rejected_logp_delta": rejected,
                  "probe_unseen_logp_delta": unseen}
        fired += [(step, message.split(" — ")[0].split(": ")[1]) for message in detector.update(record)]
    return fired


def test_balanced_learning_raises_nothing():
    assert feed([(0, 0, 0), (1.0, -1.2, 0), (2.0, -2.5, -0.1), (3.0, -3.6, -0.2)]) == []


def test_drastic_drop_fires_once_per_episode():
    rows = [(0, 0, 0), (0.2, -2.0, 0), (0.3, -4.0, 0), (3.0, -4.0, 0), (3.0, -40.0, 0)]
    assert feed(rows) == [(1, "drastic drop"), (4, "drastic drop")]


def test_degradation_needs_a_falling_chosen_and_a_growing_margin():
    rows = [(0, 0, 0), (2.0, -1.0, 0), (0.5, -5.0, 0), (-0.5, -9.0, 0)]
    fired = feed(rows)
    assert (2, "degradation") in fired
    # margin shrinking while chosen falls is not degradation
    assert ("degradation" not in {name for _, name in feed([(0, 0, 0), (2.0, -1.0, 0), (0.5, -1.0, 0)])})


def test_dispersion_when_unseen_rises_and_both_fall():
    fired = feed([(0, 0, 0), (-0.5, -3.0, 0.4)])
    assert (1, "dispersion") in fired
    assert all(name != "dispersion" for _, name in feed([(0, 0, 0), (0.5, -3.0, 0.4)]))


def test_records_without_probes_are_ignored():
    assert ThreeDDetector().update({"step": 3, "loss": 0.5}) == []


def test_drastic_drop_by_rate_once_the_chosen_stalls():
    # the demo's real run: 4.4x overall, under the threshold, but from step 2 the chosen stalls
    rows = [(0, 0, 0), (13.5, -18.7, 0), (22.6, -51.5, 0), (23.8, -80.5, 0), (23.0, -100.6, 0)]
    assert feed(rows)[0] == (3, "drastic drop")
    detector = ThreeDDetector()
    messages = [m for step, (c, r, u) in enumerate(rows) for m in detector.update(
        {"step": step, "probe_chosen_logp_delta": c, "probe_rejected_logp_delta": r, "probe_unseen_logp_delta": u})]
    assert "fell 29.00 nats since step 2 while chosen rose 1.20 (24× faster)" in messages[0]


def test_dispersion_from_the_greedy_response_when_the_unseen_fall():
    # the real model's case: unseen candidates fall with the rejected, the policy's own greedy answer gains
    detector = ThreeDDetector()
    base = {"probe_chosen_logp_delta": 0.0, "probe_rejected_logp_delta": 0.0, "probe_unseen_logp_delta": 0.0,
            "probe_greedy_logp_delta": 0.0, "probe_samples_logp_delta": 0.0}
    assert detector.update({"step": 0, **base}) == []
    later = {"probe_chosen_logp_delta": -0.5, "probe_rejected_logp_delta": -6.0, "probe_unseen_logp_delta": -4.0,
             "probe_greedy_logp_delta": 1.25, "probe_samples_logp_delta": -0.2}
    messages = [m for m in detector.update({"step": 2, **later}) if "dispersion" in m]
    assert messages == ["step 2: dispersion — log-prob rose on responses in neither (the starting policy's greedy "
                        "responses +1.25 nats) while chosen (-0.50) and rejected (-6.00) both fell"]
    # the same record without the squeezing probes: the falling unseen candidates show no dispersion
    fresh = ThreeDDetector()
    fresh.update({"step": 0, "probe_chosen_logp_delta": 0.0, "probe_rejected_logp_delta": 0.0, "probe_unseen_logp_delta": 0.0})
    plain = {k: v for k, v in later.items() if k not in ("probe_greedy_logp_delta", "probe_samples_logp_delta")}
    assert not [m for m in fresh.update({"step": 2, **plain}) if "dispersion" in m]
