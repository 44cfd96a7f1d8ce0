"""``--compile``: torch.compile of each decoder layer, for the passes that train.

Where matmuls are fast (a GPU, a CPU with bf16 units) the rest of a step — norms, rotary embeddings,
activations, residual adds and, under autocast, the casts around every matmul — is a large share of it:
on a 2-core EPYC with avx512_bf16, bf16 autocast halved the matmuls' time and left element-wise ops and
casts as the bulk (docs/benchmarks.md). Compiling a layer (inductor) fuses those into a few kernels.
The layers of one model share their code, so one graph serves them all (dynamo's recompile limit of 8
would otherwise leave the rest eager): the first training step compiles it, and the first step of another
sequence length once more, into a dynamic-shape graph that serves every later length.

Only passes with gradients run compiled. Generation (its KV cache changes at each step and from layer to
layer, which would recompile the graph), the reference's log-probs and the probes' (no gradients; but
--grad-split-every's gradient probes do run compiled) use the eager layer.
"""

from __future__ import annotations

import torch

from dpo3d.models.wrappers import unwrap


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a transformers causal LM, through a DDP, compile or PEFT wrapper if there is one."""
    base = unwrap(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"--compile: {type(base).__name__} has no decoder layers to compile "
                         "(its get_decoder().layers); train without --compile")
    return layers


def compile_layers(model) -> int:
    """Compile each decoder layer's forward for passes with gradients; others stay eager. Returns the count."""
    layers = decoder_layers(model)
    for layer in layers:
        eager = layer.forward
        compiled = torch.compile(eager)

        def forward(*args, _eager=eager, _compiled=compiled, **kwargs):
            return (_compiled if torch.is_grad_enabled() else _eager)(*args, **kwargs)

        layer.forward = forward
    return len(layers)
