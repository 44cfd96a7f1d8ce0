"""Several seeds of the toy (dpo3d.toy.seeds): the mean ± sd is numpy's over the per-seed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpo3d.toy.indicators import curves
from dpo3d.toy.scenarios import SCENARIOS
from dpo3d.toy.seeds import (
    SEED_NUMBERS,
    aggregate,
    cell,
    mean_sd,
    per_seed_rows,
    run_seeds,
    seed_list,
    seeds_markdown,
)
from dpo3d.toy.train import ToyConfig

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def results():
    config = ToyConfig(scenarios=(SCENARIOS["1"], SCENARIOS["4"]), losses=("dpo", "flex"), steps=60, sft_steps=100)
    return run_seeds(config, SEEDS)


def test_mean_and_sample_sd_by_hand():
    mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert sd == pytest.approx((5 / 3) ** 0.5)  # Σ(x - 2.5)² = 5, over n - 1 = 3
    assert mean_sd([0.7]) == (0.7, None)
    assert cell({"mean": 0.8, "sd": 0.125, "values": []}) == "0.80 ± 0.12"
    assert cell({"mean": 0.8, "sd": None, "values": [0.8]}) == "0.80"
    assert seed_list(3, 5) == (3, 4, 5, 6, 7)
    with pytest.raises(ValueError, match="at least 1"):
        seed_list(0, 0)


def test_each_seed_is_its_own_run_and_the_curves_differ(results):
    assert list(results) == list(SEEDS)
    assert [r.config.seed for r in results.values()] == list(SEEDS)
    chosen = [curves(result).chosen for result in results.values()]
    for a in range(len(SEEDS)):
        for b in range(a + 1, len(SEEDS)):
            assert not torch.allclose(chosen[a], chosen[b])  # different init and different rejected draws
    # the same seed again gives the same curve
    again = run_seeds(results[1].config, (1,))[1]
    assert torch.equal(curves(again).chosen, chosen[1])


def test_the_table_sd_is_numpy_s_over_the_per_seed_values(results):
    rows = per_seed_rows(results)
    assert len(rows) == len(SEEDS) * 4 and set(SEED_NUMBERS) <= set(rows[0])
    groups = aggregate(rows, list(SEED_NUMBERS))
    assert [(g["scenario"], g["loss_name"]) for g in groups] == [("1", "dpo"), ("1", "flex"), ("4", "dpo"), ("4", "flex")]
    for g in groups:
        assert g["seeds"] == list(SEEDS)
        for key in ("final_chosen", "peak_chosen", "post_peak_fall", "other_chosen_end"):
            values = [r[key] for r in rows if (r["scenario"], r["loss_name"]) == (g["scenario"], g["loss_name"])]
            assert g[key]["values"] == values
            assert g[key]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert g[key]["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            assert g[key]["sd"] > 0 or key == "post_peak_fall"  # the seeds differ (60 steps: no fall yet)
    s1 = groups[0]
    table = seeds_markdown(groups)
    assert "over 3 seeds (0, 1, 2)" in table
    expected = f"{np.mean(s1['final_chosen']['values']):.2f} ± {np.std(s1['final_chosen']['values'], ddof=1):.2f}"
    line = next(line for line in table.splitlines() if line.startswith("| 1 | dpo |"))
    assert line.split(" | ")[5] == expected  # scenario, loss, start, peak, step, final


def test_the_four_shares_and_dispersion_per_seed(results):
    for row in per_seed_rows(results):
        shares = [row[f"{name}_end"] for name in ("own_chosen", "rejected", "other_chosen", "unseen")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-12)
        assert row["dispersion"] == pytest.approx(row["unseen_end"] - row["unseen_start"], abs=1e-15)
