"""What a several-seed toy run and an ablation leave in ``--out``.

Several seeds (``dpo3d toy --seeds N``, 5 by default with ``--sweep``)::

    seed-<k>/metrics.jsonl, seed-<k>/summary.json   each seed's run, as a one-seed run writes them
    seeds.json   the config, the seeds, one row of numbers per (seed, run) and their mean ± sd
    sweep.md     the mean ± sd tables (seeds.seeds_markdown)
    sweep.png    mean line ± sd band per (scenario, loss); landscape.png as a one-seed run

An ablation (``dpo3d toy --ablation``): ablation.json (per seed and aggregated),
ablation.md and ablation.png.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from dpo3d.data.records import json_safe, write_json

from .ablation import AblationConfig, Trace, ablation_groups, ablation_markdown, per_seed_numbers
from .model import one_thread
from .outputs import write_outputs
from .seeds import SD_DDOF, SEED_NUMBERS, aggregate, per_seed_rows, seeds_markdown
from .train import ToyResult

SEEDS_JSON = "seeds.json"
SEEDS_TABLE = "sweep.md"
ABLATION_JSON = "ablation.json"
ABLATION_TABLE = "ablation.md"


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_seed_outputs(
    results: dict[int, ToyResult],
    out: str | Path,
    figures: bool = True,
    landscape_losses: Sequence[str] = (),
    metrics_every: int = 25,
) -> tuple[list[Path], list[dict]]:
    """Every seed's metrics and summary in ``seed-<k>/``, then seeds.json, sweep.md and the band figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for seed, result in results.items():
        written += write_outputs(result, out / f"seed-{seed}", figures=False, metrics_every=metrics_every)
    rows = per_seed_rows(results)
    groups = aggregate(rows, list(SEED_NUMBERS))
    config = next(iter(results.values())).config.to_dict()
    config.pop("seed")
    record = {"config": config, "seeds": list(results), "sd_ddof": SD_DDOF, "per_seed": rows, "aggregate": groups}
    write_json(json_safe(record), out / SEEDS_JSON)
    written.append(out / SEEDS_JSON)
    written.append(_write_text(out / SEEDS_TABLE, seeds_markdown(groups)))
    if figures:
        from .figures import default_landscape_losses
        from .figures_seeds import plot_sweep_bands
        from .landscape import plot_landscapes

        first = next(iter(results.values()))
        with one_thread():
            written.append(plot_sweep_bands(results, out / "sweep.png"))
            names = list(landscape_losses) or default_landscape_losses(first)
            written.append(plot_landscapes(names, out / "landscape.png", first.config.hyperparameters))
    return written, groups


def write_ablation_outputs(
    config: AblationConfig, results: dict[int, dict[str, Trace]], out: str | Path, figures: bool = True
) -> tuple[list[Path], list[dict], str]:
    """ablation.json (per seed and mean ± sd), ablation.md and ablation.png; returns the paths, groups and table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = ablation_groups(config, results)
    table = ablation_markdown(config, groups)
    record = asdict(config)
    record["scenarios"] = [s.name for s in config.scenarios]
    payload = {"config": record, "sd_ddof": SD_DDOF, "per_seed": per_seed_numbers(config, results), "aggregate": groups}
    write_json(json_safe(payload), out / ABLATION_JSON)
    written = [out / ABLATION_JSON, _write_text(out / ABLATION_TABLE, table)]
    if figures:
        from .figures_seeds import plot_ablation

        with one_thread():
            written.append(plot_ablation(config, results, out / "ablation.png"))
    return written, groups, table
