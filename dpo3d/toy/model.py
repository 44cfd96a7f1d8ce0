"""The toy policy: a three-layer MLP from a one-hot prompt to a categorical distribution.

Many runs (scenarios × losses) train side by side as one *stack*: every weight
has a leading run dimension and each run's forward pass only reads its own
slice. Adam is element-wise, so a stacked run takes exactly the steps it would
take alone; stacking only removes Python overhead (the sweep runs in seconds).
Everything is float64: DPO drives rejected probabilities to 1e-40 and below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .scenarios import N_PROMPTS, N_RESPONSES

DTYPE = torch.float64


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's setting.

    The toy's tensors are tiny: splitting each op across threads only adds
    synchronisation, and on a busy two-core machine it made a sweep 10x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class ToyMLP:
    """``n_runs`` independent MLPs 4 → hidden → hidden → 10 (ReLU), stacked."""

    weights: list[torch.Tensor]  # w1 (R,4,H), b1 (R,H), w2 (R,H,H), b2 (R,H), w3 (R,H,10), b3 (R,10)

    @classmethod
    def init(cls, n_runs: int, hidden: int, seed: int) -> ToyMLP:
        """nn.Linear's default init (uniform ±1/√fan_in), the same draw for every run.

        Runs of one call start from identical weights, so scenarios differ only by
        their step-1 target and losses only by the loss.
        """
        generator = torch.Generator().manual_seed(seed)
        weights = []
        for fan_in, fan_out in ((N_PROMPTS, hidden), (hidden, hidden), (hidden, N_RESPONSES)):
            bound = 1 / math.sqrt(fan_in)
            for shape in ((fan_in, fan_out), (fan_out,)):
                draw = (torch.rand(shape, generator=generator, dtype=DTYPE) * 2 - 1) * bound
                weights.append(draw.expand(n_runs, *shape).clone().requires_grad_(True))
        return cls(weights)

    @property
    def n_runs(self) -> int:
        return self.weights[0].shape[0]

    def logits(self) -> torch.Tensor:
        """Logits for every prompt, ``(runs, prompts, responses)``; the input is the one-hot prompt."""
        w1, b1, w2, b2, w3, b3 = self.weights
        one_hot = torch.eye(N_PROMPTS, dtype=DTYPE)
        hidden = torch.relu(torch.einsum("pi,rih->rph", one_hot, w1) + b1[:, None, :])
        hidden = torch.relu(torch.bmm(hidden, w2) + b2[:, None, :])
        return torch.bmm(hidden, w3) + b3[:, None, :]

    def log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits(), dim=-1)

    def take(self, runs: list[int]) -> ToyMLP:
        """A new stack made of copies of the given runs (a run may be copied several times)."""
        index = torch.tensor(runs, dtype=torch.long)
        return ToyMLP([w.detach()[index].clone().requires_grad_(True) for w in self.weights])


class Adam:
    """Adam (Kingma & Ba), the update of ``torch.optim.Adam`` with its defaults, element-wise.

    Written out because ``torch.optim`` imports torch._dynamo (~2 s on two CPU
    cores), longer than a whole toy sweep; a test checks it against torch's.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-self.lr / bias_correction1)


def fit_distribution(model: ToyMLP, targets: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Step 1 (the SFT stand-in): train each run towards its hand-set distribution.

    Full-batch Adam on the cross-entropy to ``targets`` ``(runs, prompts, responses)``;
    returns each run's largest per-prompt KL(target ‖ model) at the end.
    """
    optimizer = Adam(model.weights, lr=lr)
    targets = targets.to(DTYPE)
    for _ in range(steps):
        cross_entropy = -(targets * model.log_probs()).sum(-1).mean(-1).sum()
        optimizer.step(list(torch.autograd.grad(cross_entropy, model.weights)))
    with torch.no_grad():
        kl = (targets * (targets.log() - model.log_probs())).sum(-1)
    return kl.amax(-1)
