"""The 3D detector on hand-made probe trajectories: the right labels for each situation, never the wrong one
(displacement and dispersion may hold at once: the chosen fell, and the mass went to a response in no pair)."""

from __future__ import annotations

import pytest

from dpo3d.watch.detector import DetectorSettings, ThreeDDetector

CHOSEN_TOKENS, REJECTED_TOKENS = 10, 10


def record(step, chosen, rejected, chosen_tokens=CHOSEN_TOKENS, rejected_tokens=REJECTED_TOKENS, **more):
    """A probe record from summed changes (nats) and the responses' lengths."""
    out = {"step": step, "probe_chosen_logp_delta": chosen, "probe_rejected_logp_delta": rejected,
           "probe_chosen_logp_per_token_delta": chosen / chosen_tokens,
           "probe_rejected_logp_per_token_delta": rejected / rejected_tokens}
    for group, value in more.items():
        if group.startswith("probe_"):  # a field as it is logged
            out[group] = value
        else:  # another probe group: (summed change, tokens)
            summed, tokens = value
            out[f"probe_{group}_logp_delta"], out[f"probe_{group}_logp_per_token_delta"] = summed, summed / tokens
    return out


def labels(records, detector=None):
    detector = detector or ThreeDDetector()
    for r in records:
        detector.update(r)
    return [(event["step"], event["property"]) for event in detector.events]


def test_balanced_learning_raises_nothing():
    rows = [record(0, 0, 0), record(1, 1.0, -1.2), record(2, 2.0, -2.5), record(3, 3.0, -3.6)]
    assert labels(rows) == []


def test_a_falling_chosen_is_displacement_never_a_drastic_drop():
    # the case: chosen -10, rejected -2 nats; the old detector called it "drastic drop (40x faster)"
    found = labels([record(0, 0, 0), record(1, -10.0, -2.0)])
    assert found == [(1, "likelihood_displacement")]


def test_displacement_while_the_margin_grows_names_both_views():
    detector = ThreeDDetector()
    labels([record(0, 0, 0), record(2, -1.5, -6.0), record(4, -3.0, -14.0)], detector)
    event = detector.events[0]
    assert (event["step"], event["property"]) == (2, "likelihood_displacement")
    assert event["per_token"]["chosen"] == pytest.approx(-0.15) and event["summed"]["chosen"] == pytest.approx(-1.5)
    assert "-0.150 nats/token (-1.50 summed)" in event["message"] and "margin grew" in event["message"]
    # a chosen falling while the rejected rises is training the wrong way, not displacement
    assert labels([record(0, 0, 0), record(1, -3.0, 2.0)]) == []


def test_a_long_rejected_beside_a_short_chosen_is_not_drastic_per_token():
    # summed: rejected fell 10 nats, chosen rose 1 (10x); per token both moved 0.1 nats: comparable rates
    fair = [record(0, 0, 0, 10, 100), record(1, 1.0, -10.0, 10, 100)]
    assert labels(fair) == []
    # the same sums over equal lengths are a drastic drop
    assert labels([record(0, 0, 0, 10, 10), record(1, 1.0, -10.0, 10, 10)]) == [(1, "drastic_drop")]


def test_drastic_drop_by_rate_once_the_chosen_stalls_and_once_per_episode():
    rows = [record(0, 0, 0), record(1, 13.5, -18.7), record(2, 22.6, -51.5), record(3, 23.8, -80.5),
            record(4, 23.9, -100.6)]
    detector = ThreeDDetector()
    assert labels(rows, detector) == [(3, "drastic_drop")]
    event = detector.events[0]
    assert event["since"] == 2
    assert "fell 2.900 nats/token while the chosen rose 0.120 (24× faster)" in event["message"]


def test_degradation_needs_a_peak_a_fall_and_a_growing_margin():
    rows = [record(0, 0, 0), record(1, 2.0, -1.0), record(2, 0.5, -5.0), record(3, -0.5, -9.0)]
    detector = ThreeDDetector()
    assert (2, "degradation") in labels(rows, detector)
    event = next(e for e in detector.events if e["property"] == "degradation")
    assert event["since"] == 1 and "1.50 nats below its peak at step 1" in event["message"]
    # a dip under 1 nat from the peak is step-to-step wobble, not degradation
    assert labels([record(0, 0, 0), record(1, 2.0, -1.0), record(2, 1.2, -5.0)]) == []
    # the chosen rose first, so its later fall below 0 is degradation, not displacement
    assert all(name != "likelihood_displacement" for _, name in labels(rows))
    # a margin that shrinks while the chosen falls is not degradation
    assert all(name != "degradation" for _, name in labels([record(0, 0, 0), record(1, 2.0, -1.0), record(2, 0.5, -1.0)]))


def test_dispersion_needs_mass_on_a_response_in_no_pair_while_both_fall():
    rows = [record(0, 0, 0, unseen=(0.0, 10)), record(1, -1.5, -3.0, unseen=(1.5, 10))]
    assert (1, "dispersion") in labels(rows)
    assert all(name != "dispersion" for _, name in labels(
        [record(0, 0, 0, unseen=(0.0, 10)), record(1, 0.5, -3.0, unseen=(1.5, 10))]))  # the chosen rose
    assert all(name != "dispersion" for _, name in labels(
        [record(0, 0, 0, unseen=(0.0, 10)), record(1, -1.5, -3.0, unseen=(-4.0, 10))]))  # nothing gained


def test_dispersion_from_the_greedy_response_when_the_unseen_fall():
    detector = ThreeDDetector()
    rows = [record(0, 0, 0, unseen=(0.0, 10), greedy=(0.0, 20)),
            record(2, -1.5, -6.0, unseen=(-4.0, 10), greedy=(1.25, 20))]
    labels(rows, detector)
    message = next(e["message"] for e in detector.events if e["property"] == "dispersion")
    assert "the starting policy's greedy responses +0.062 nats/token (+1.25 summed)" in message
    assert "unseen" not in message


def test_token_level_dispersion_at_the_first_differing_token():
    start = record(0, 0, 0, probe_divergence_other_p=0.10)
    assert labels([start, record(1, -1.5, -3.0, probe_divergence_other_p=0.11)]) == [(1, "likelihood_displacement")]
    detector = ThreeDDetector()
    labels([start, record(1, -1.5, -3.0, probe_divergence_other_p=0.30)], detector)
    event = next(e for e in detector.events if e["property"] == "dispersion")
    assert "other tokens at the first differing token 0.100 → 0.300" in event["message"]
    assert event["divergence_other_p"] == pytest.approx(0.30)


def test_changes_inside_the_noise_floor_are_never_events():
    # bf16-like noise of 0.05 nats/token, 0.5 summed: moves within 3x of it are no events
    noisy = record(0, 0, 0, probe_noise_nats_per_token=0.05, probe_noise_nats=0.5)
    assert labels([noisy, record(1, -1.2, -1.2), record(2, 1.0, -1.4)]) == []
    # the same moves without noise are events, and a move past the floor still is one
    assert labels([record(0, 0, 0), record(1, -1.2, -1.2)]) == [(1, "likelihood_displacement")]
    assert labels([record(0, 0, 0), record(1, 1.0, -5.4)]) == [(1, "drastic_drop")]
    detector = ThreeDDetector()
    assert labels([noisy, record(1, -2.0, -9.0)], detector) == [(1, "likelihood_displacement")]
    event = detector.events[0]
    assert (event["threshold_per_token"], event["threshold_summed"]) == (pytest.approx(0.15), pytest.approx(1.5))


def test_summed_only_records_of_older_runs_are_read_in_nats():
    rows = [{"step": 0, "probe_chosen_logp_delta": 0.0, "probe_rejected_logp_delta": 0.0},
            {"step": 1, "probe_chosen_logp_delta": 0.2, "probe_rejected_logp_delta": -2.0}]
    assert labels(rows) == [(1, "drastic_drop")]


def test_records_without_probes_are_ignored_and_settings_are_checked():
    assert ThreeDDetector().update({"step": 3, "loss": 0.5}) == []
    with pytest.raises(ValueError, match="drop_ratio"):
        DetectorSettings(drop_ratio=1.0)


def test_a_chosen_falling_now_is_no_drastic_drop_even_above_its_start():
    # since step 0 the chosen is +0.1/token and the rejected -2.5 (25x), but the chosen fell 0.3/token since step 2
    rows = [record(0, 0, 0), record(1, 1.0, -2.0), record(2, 4.0, -9.0), record(3, 1.0, -25.0)]
    assert labels(rows) == [(3, "degradation")]


def test_a_group_logged_summed_only_is_read_in_nats():
    # a trainer outside dpo3d may log only the summed unseen change: dispersion still reads (and shows) it
    rows = [record(0, 0, 0, probe_unseen_logp_delta=0.0), record(1, -1.5, -3.0, probe_unseen_logp_delta=2.0)]
    detector = ThreeDDetector()
    assert (1, "dispersion") in labels(rows, detector)
    assert "unseen candidates +2.000 nats/token (+2.00 summed)" in detector.events[-1]["message"]
