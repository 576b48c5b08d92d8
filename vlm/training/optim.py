"""Muon for the weight matrices of the transformer layers, AdamW for every other parameter, in one optimizer.

Muon (Keller Jordan, 2024) keeps a momentum of each matrix's gradient, as SGD does, and steps along the nearest
semi-orthogonal matrix to that momentum instead of the momentum itself: every direction of the matrix moves by the
same amount, so the rare directions that a few samples teach are not drowned by the common ones. On the main job it
reaches AdamW's validation loss in far fewer steps (docs/results.md, "The recipe"; docs/recipe_sweep.md, "Muon").

The orthogonalization is five Newton-Schulz iterations, a few matrix products per matrix. `torch.optim.Muon` runs
them in bfloat16, which a CPU without bf16 instructions emulates, many times slower than float32. Here they run in
training's autocast dtype: bfloat16 only where the hardware runs it fast. In float32, matrices much wider than tall
iterate on their Gram matrix: for the default preset, 6.1 billion multiply-adds a step instead of 7.9 (counted from
the shapes; docs/performance.md, "Muon: Newton-Schulz on the Gram matrix, batched by shape").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.adamw import adamw

# The quintic iteration's coefficients from Keller Jordan's Muon (as in torch.optim.Muon): they push every singular
# value into roughly [0.7, 1.2] in five steps, which by Jordan's measurements trains as well as exact orthogonalization.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def muon_matrices(module: nn.Module, convolutions: bool = False) -> set[nn.Parameter]:
    """The parameters Muon steps: 2-D weights of linear maps, and with `convolutions` the filters of convolutions
    (stepped as (out channels, in channels x kernel) matrices, as in Jordan's CIFAR-10 speedruns, where Muon began).
    Embedding tables are looked up row by row, not multiplied, and stay with AdamW, as do biases and norms."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    chosen = {p for p in module.parameters() if p.dim() == 2 and id(p) not in embeddings}
    if convolutions:
        chosen |= {m.weight for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))}
    return chosen


def orthogonalize(matrix: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """The nearest semi-orthogonal matrix, approximately: Newton-Schulz on the Gram matrix of the shorter side.
    `matrix` is one (m, n) matrix or a batch (k, m, n), each orthogonalized on its own."""
    batch = matrix.to(dtype)
    if batch.dim() == 2:
        batch = batch.unsqueeze(0)
    tall = batch.size(1) > batch.size(2)
    if tall:
        batch = batch.mT
    # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    x = batch / (batch.norm(dim=(1, 2), keepdim=True) + 1e-7)
    short, long = x.shape[1:]
    # For an (m, n) matrix five plain steps cost 10 m^2 n + 5 m^3 multiply-adds, the Gram form 2 m^2 n + 17 m^3:
    # less whenever n > 1.5 m, 45% less for the decoder's (256, 1024) MLP matrices. Float32 only: in half precision
    # the Gram form's rounding errors grow from step to step (Dao AI Lab, "Gram Newton-Schulz", 2026).
    if dtype == torch.float32 and long > 1.5 * short:
        x = gram_newton_schulz(x, steps)
    else:
        x = plain_newton_schulz(x, steps)
    x = x.mT if tall else x
    return x.reshape(matrix.shape).to(matrix.dtype)


def orthogonalize_all(matrices: list[torch.Tensor], steps: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """`orthogonalize` for each matrix, those of one shape up to transposition iterated together as one batch: the
    default preset's 39 matrices make 10 batches, and at these sizes a batched product costs little more than one
    of its matrices' products (the main job's `vlm-train` ran faster batched than matrix by matrix:
    docs/performance.md, "Muon: Newton-Schulz on the Gram matrix, batched by shape")."""
    # Tall ones transposed: the iteration runs on the short side either way.
    tall = [matrix.size(0) > matrix.size(1) for matrix in matrices]
    wide = [matrix.T if is_tall else matrix for matrix, is_tall in zip(matrices, tall)]
    batches: dict[torch.Size, list[int]] = {}
    for index, matrix in enumerate(wide):
        batches.setdefault(matrix.shape, []).append(index)
    results = list(matrices)
    for indices in batches.values():
        updates = orthogonalize(torch.stack([wide[i] for i in indices]), steps, dtype)
        for i, update in zip(indices, updates.unbind(0)):
            results[i] = update.T if tall[i] else update
    return results


def plain_newton_schulz(x: torch.Tensor, steps: int) -> torch.Tensor:
    """x: (k, m, n)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # (a + b G + c G^2) x
    return x


def gram_newton_schulz(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The same iterates as `plain_newton_schulz`, carried by the short side alone. Each step multiplies x on the
    left by a polynomial p of its Gram matrix G = x x^T, so after k steps x_k = q_k x_0 with q_k the product of the
    p's, and G_k+1 = p G_k p. All of them are polynomials in G_0 and commute: the loop runs on (m, m) matrices and
    touches the long side twice, to form G_0 and to apply q at the end. x: (k, m, n)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    gram = x @ x.mT
    product = None
    for step in range(steps):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        poly.diagonal(dim1=1, dim2=2).add_(a)
        product = poly if product is None else poly @ product
        if step < steps - 1:
            gram = poly @ gram @ poly
    return product @ x


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with `muon=True` take Muon steps, the others AdamW steps.

    Muon's step is scaled by 0.2 * sqrt(max(rows, cols)) so that its size per entry matches AdamW's at the same
    learning rate (Moonshot AI, "Muon is scalable for LLM training", 2025); weight decay is decoupled in both.
    """

    def __init__(
        self,
        params: Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        newton_schulz_steps: int = 5,
        newton_schulz_dtype: torch.dtype = torch.float32,
        fused: bool = True,
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum, muon=False, fused=fused
        )
        super().__init__(params, defaults)
        self.newton_schulz_steps = newton_schulz_steps
        self.newton_schulz_dtype = newton_schulz_dtype
        for group in self.param_groups:
            if group["muon"] and any(p.dim() < 2 for p in group["params"]):
                raise ValueError("Muon steps matrices and filters only; put vectors in an AdamW group")

    @torch.no_grad()
    def step(self, closure=None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["muon"] else self._adamw_step)(group, params)

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        nesterov_matrices = []
        for param in params:
            state = self.state[param]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(param)
            buffer = state["momentum_buffer"]
            buffer.lerp_(param.grad, 1 - momentum)
            # a filter bank (out, in, *kernel) as (out, in x kernel)
            nesterov_matrices.append(param.grad.lerp(buffer, momentum).flatten(1))
        updates = orthogonalize_all(nesterov_matrices, self.newton_schulz_steps, self.newton_schulz_dtype)
        for param, update in zip(params, updates):
            param.mul_(1 - lr * group["weight_decay"])
            param.add_(update.view_as(param), alpha=-lr * 0.2 * math.sqrt(max(update.shape)))

    def _adamw_step(self, group: dict, params: list[torch.Tensor]) -> None:
        for param in params:
            state = self.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=group["fused"],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
