"""Weighted mixtures of registered losses, as TRL's ``loss_type`` list with ``loss_weights`` (MPO).

``dpo:0.8,bco:0.2,sft:1.0`` is the loss Σ_i w_i·L_i, per pair. A part written
without a weight gets 1. Hyper-parameters: a plain name (``beta``) goes to every
part that takes it; a qualified one (``bco.beta``) to that part only, and wins.
The mixture's 3D diagnostics need nothing of their own: the gradient of the
weighted sum is the weighted sum of the parts' gradients, and the generic
autograd path of ``gradient_diagnostics`` measures exactly that.
"""

from __future__ import annotations

from .registry import LOSSES, LossOutput, LossSpec, PreferenceBatch


def parse_mixture(text: str) -> list[tuple[str, float]]:
    """``"dpo:0.8,bco:0.2"`` -> ``[("dpo", 0.8), ("bco", 0.2)]``; every part must be a registered loss."""
    parts = []
    for chunk in text.split(","):
        chunk = chunk.strip()
        if not chunk:
            raise ValueError(f"loss mixture '{text}': an empty part")
        name, sep, weight_text = chunk.partition(":")
        name = name.strip()
        if name not in LOSSES:
            raise ValueError(f"loss mixture '{text}': unknown loss '{name}'; choose from: {', '.join(sorted(LOSSES))}")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"loss mixture '{text}': weight '{weight_text}' of {name} is not a number") from None
        if not weight > 0:
            raise ValueError(f"loss mixture '{text}': the weight of {name} must be > 0")
        if any(name == seen for seen, _ in parts):
            raise ValueError(f"loss mixture '{text}': {name} appears twice")
        parts.append((name, weight))
    return parts


def canonical_name(parts: list[tuple[str, float]]) -> str:
    return ",".join(f"{name}:{weight:g}" for name, weight in parts)


def mixture_spec(text: str) -> LossSpec:
    """A LossSpec whose function is the weighted sum of its parts; its rewards are the first part's."""
    parts = parse_mixture(text)
    specs = [(LOSSES[name], weight) for name, weight in parts]
    defaults: dict[str, float | None] = {}
    for spec, _ in specs:
        for key, value in spec.defaults.items():
            defaults.setdefault(key, value)
    for spec, _ in specs:
        for key, value in spec.defaults.items():
            defaults[f"{spec.name}.{key}"] = value

    def mixture(batch: PreferenceBatch, **hyperparameters: float) -> LossOutput:
        total = None
        first = None
        for spec, weight in specs:
            own = spec.select({k: v for k, v in hyperparameters.items() if "." not in k})
            own.update({k.split(".", 1)[1]: v for k, v in hyperparameters.items() if k.startswith(f"{spec.name}.")})
            out = spec.fn(batch, **own)
            total = weight * out.losses if total is None else total + weight * out.losses
            first = first or out
        assert total is not None and first is not None
        return LossOutput(total, first.chosen_rewards, first.rejected_rewards)

    formula = " + ".join(f"{weight:g}·L_{spec.name}" for spec, weight in specs)
    mixture.__doc__ = f"Σ w_i·L_i = {formula}: a weighted mixture (each part reads log-probs its own way)."
    kinds = {spec.log_probs for spec, _ in specs}
    return LossSpec(
        name=canonical_name(parts),
        fn=mixture,
        log_probs=kinds.pop() if len(kinds) == 1 else "mixed",  # type: ignore[arg-type]
        needs_reference=any(spec.needs_reference for spec, _ in specs),
        source="weighted mixture, as TRL's loss_type list with loss_weights (MPO, Wang et al. 2024)",
        defaults=defaults,
        inputs=frozenset().union(*(spec.inputs for spec, _ in specs)),
    )

