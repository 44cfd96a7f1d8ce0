"""The toy model of §3.2 (4 prompts, 10 responses, a small MLP) where DPO's 3D-properties can be watched.

    from dpo3d.toy import ToyConfig, run_toy, indicators
    result = run_toy(ToyConfig(losses=("dpo", "flex")))   # every scenario × both losses
    rows = indicators(result)                              # the 3D indicators per run

Modules: scenarios (prompts, responses, pairs, step-1 distributions), model (the
stacked MLP, step 1, Adam), train (both steps, the per-step record), watch (the
probes fed to train-dpo's live 3D detector, and dpo3d.watch.guard acting on its warnings:
``ToyConfig(guard="sft")``), indicators, mass (where the probability mass went, by
class of response and the model's argmax), outputs (metrics.jsonl, summary.json),
figures and landscape (PNGs; matplotlib is imported only there), sweep_table
(sweep.md: every loss × every scenario), parallel (the scenarios spread over
processes; the same numbers, less wall time), seeds (one config over several seeds,
mean ± sd), ablation (what drives degradation: DPO with the prompts alone, a logit
table, SGD), report (the several-seed and ablation files) and figures_seeds (mean
line ± sd band).
"""

from .indicators import curves, indicators
from .outputs import write_outputs
from .scenarios import SCENARIOS, Scenario, draw_pairs, load_distribution
from .train import ToyConfig, ToyDiverged, ToyResult, run_toy

__all__ = [
    "SCENARIOS",
    "Scenario",
    "ToyConfig",
    "ToyDiverged",
    "ToyResult",
    "curves",
    "draw_pairs",
    "indicators",
    "load_distribution",
    "run_toy",
    "write_outputs",
]
