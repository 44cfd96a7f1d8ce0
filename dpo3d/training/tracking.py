"""Experiment trackers (TensorBoard, W&B, MLflow, Trackio, ...) through accelerate's trackers.

``metrics.jsonl`` stays the run's record and is always written; a tracker gets
the same logged records, step by step, from the main process only (accelerate's
trackers are rank-0 only), plus the run's config at the start and every 3D
warning as text (``three_d_warning``) with a numeric marker
(``three_d_warnings``, the number raised at that step) that charts can show.
Local trackers write under ``OUT/logs`` (TensorBoard: ``OUT/logs/dpo3d``); hosted
ones use the project ``dpo3d`` and the run folder's name as the run name.
"""

from __future__ import annotations

import math
from pathlib import Path

PROJECT = "dpo3d"
LOG_FOLDER = "logs"
KNOWN = ("tensorboard", "wandb", "mlflow", "trackio", "comet_ml", "aim", "clearml", "dvclive", "swanlab")
_PACKAGES = {"tensorboard": "tensorboard", "comet_ml": "comet_ml"}


def parse(report_to: str | None) -> list[str]:
    """``--report-to``: a comma list of tracker names, or ``none``."""
    names = [name.strip().lower() for name in (report_to or "none").split(",") if name.strip()]
    if not names or names == ["none"]:
        return []
    unknown = [name for name in names if name not in KNOWN]
    if unknown or "none" in names:
        raise ValueError(f"--report-to {report_to}: choose from {', '.join(KNOWN)} (comma-separated), or none")
    return list(dict.fromkeys(names))


def check_available(names: list[str]) -> None:
    """Stop before any training when a tracker's package is missing (accelerate would drop it silently)."""
    from accelerate.tracking import get_available_trackers

    available = {str(tracker) for tracker in get_available_trackers()}
    missing = [name for name in names if name not in available]
    if missing:
        packages = " ".join(_PACKAGES.get(name, name) for name in missing)
        raise ValueError(f"--report-to {','.join(missing)}: not installed (pip install {packages})")


def logging_dir(out: Path) -> Path:
    return Path(out) / LOG_FOLDER


def flat_config(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """The run config as one level of scalars (what TensorBoard's hparams and MLflow's params take)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def loggable(record: dict) -> dict[str, float | str]:
    """The record's finite numbers and its texts (None, the JSON form of non-finite values, is left out)."""
    values: dict[str, float | str] = {}
    for key, value in record.items():
        if key == "step" or value is None or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            values[key] = value
        elif isinstance(value, str):
            values[key] = value
    return values


class Trackers:
    """The trackers of one run; every method is a no-op without trackers and off the main process."""

    def __init__(self, accelerator, names: list[str], out: Path, config: dict):
        self.accelerator, self.names = accelerator, names
        if names:
            run_name = Path(out).resolve().name
            accelerator.init_trackers(
                PROJECT, config=flat_config(config),
                init_kwargs={"wandb": {"name": run_name}, "trackio": {"name": run_name}, "mlflow": {"run_name": run_name}},
            )

    def log(self, record: dict) -> None:
        if self.names:
            self.accelerator.log(loggable(record), step=int(record["step"]))

    def warnings(self, step: int, messages: list[str]) -> None:
        if self.names and messages:
            self.accelerator.log({"three_d_warnings": len(messages), "three_d_warning": "\n\n".join(messages)}, step=step)

    def end(self) -> None:
        if self.names:
            self.accelerator.end_training()
