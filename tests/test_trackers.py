"""Experiment trackers through accelerate: TensorBoard read back offline holds what metrics.jsonl holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo3d.data.run_log import read_log
from dpo3d.training import tracking
from dpo3d.training.config import LoopConfig

ROOT = Path(__file__).resolve().parents[1]
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def events(folder: Path):
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_train_dpo_reports_to_tensorboard_the_losses_of_metrics_jsonl(tmp_path, tiny_model_dir):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Blue {i}.", "rejected": f"No {i}, never."})
                             + "\n" for i in range(6)))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dpo3d", "train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--out", str(out),
         "--max-steps", "3", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-2", "--probe-size", "2",
         "--report-to", "tensorboard"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logged = read_log(out / "metrics.jsonl")
    assert [r["step"] for r in logged] == [0, 1, 2, 3]  # metrics.jsonl is written beside the tracker
    board = events(out / tracking.LOG_FOLDER / tracking.PROJECT)
    for key in ("loss", "margin", "probe_chosen_logp", "grad_norm"):
        written = {event.step: event.value for event in board.Scalars(key)}
        expected = {r["step"]: r[key] for r in logged if r.get(key) is not None}
        assert sorted(written) == sorted(expected), key
        for step, value in expected.items():
            assert written[step] == pytest.approx(value, rel=1e-6, abs=1e-7), (key, step)  # TensorBoard keeps float32
    assert board.Scalars("loss")[0].value != board.Scalars("loss")[-1].value  # the run trained


def test_3d_warnings_reach_the_tracker_as_text_and_a_marker(tmp_path):
    from dpo3d.training.run_folder import make_accelerator

    accelerator, names = make_accelerator(True, None, "tensorboard", tmp_path)
    trackers = tracking.Trackers(accelerator, names, tmp_path, {"lr": 1e-6, "extra": {"loss": "dpo", "ref": None}})
    trackers.log({"step": 4, "loss": 0.5, "note": None, "bad": float("nan")})
    trackers.warnings(4, ["drastic drop: the rejected log-prob fell 9.0 nats while the chosen rose 0.1"])
    trackers.end()
    board = events(tmp_path / tracking.LOG_FOLDER / tracking.PROJECT)
    assert [(e.step, e.value) for e in board.Scalars("three_d_warnings")] == [(4, 1.0)]
    assert [(e.step, e.value) for e in board.Scalars("loss")] == [(4, 0.5)]
    texts = board.Tensors("three_d_warning/text_summary")
    assert texts[0].step == 4 and b"drastic drop" in texts[0].tensor_proto.string_val[0]
    assert "note" not in board.Tags()["scalars"] and "bad" not in board.Tags()["scalars"]


def test_report_to_names_are_checked_before_training():
    assert tracking.parse("none") == [] and tracking.parse(None) == []
    assert tracking.parse("tensorboard, wandb,tensorboard") == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="choose from tensorboard, wandb"):
        LoopConfig(out=Path("x"), report_to="tensorbored").validate()
    with pytest.raises(ValueError, match="or none"):
        tracking.parse("none,wandb")


def test_a_missing_tracker_package_is_one_clear_line():
    from accelerate.tracking import get_available_trackers

    if "aim" in {str(t) for t in get_available_trackers()}:
        pytest.skip("aim is installed here")
    with pytest.raises(ValueError, match=r"--report-to aim: not installed \(pip install aim\)"):
        tracking.check_available(["tensorboard", "aim"])
