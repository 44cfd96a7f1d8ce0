"""Training: one accelerate loop shared by `sft`, `train-dpo` (and `train-rm`), with live 3D diagnostics.

Each trainer is a *task* (what one example's loss is, what to measure) handed to
the shared loop (batches, accumulation, data parallelism, checkpoints, resume,
NaN guard, metrics). Only loop.py imports accelerate.
"""
