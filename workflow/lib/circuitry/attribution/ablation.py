"""Edges removed outright, through the hook points EAP scores (`circuitry.attribution.hooks`).

Removing edge u -> v subtracts O_u (what forward node u writes into the residual stream)
from backward node v's own copy of its input, in_v, and from nothing else; q, k or v
re-run the pre-attention norm on their own perturbed copy. Two uses:

- `perturbed_loss` subtracts eps * O_u from one copy: central finite differences of it
  check each score to O(eps^2) (`ablation_check`, the exactness tests);
- `ablated_losses` removes whole edges (eps = 1), many ablations per forward pass: batch
  row r reads the same sample with the edges of `removed[r]` gone, so the cost scales with
  the number of ablations, one forward pass per batch of them and no backward pass. Where
  a row removes several edges into v, v reads in_v minus the sum of their sources'
  outputs as computed in that same (perturbed) forward pass;
- `integrated_changes` integrates the derivative along each edge's removal, e from 0 to
  1 (per-edge integrated gradients), one (edge, point) per batch row: it recovers the
  part of the true change that is nonlinear in e, where EAP (the derivative at 0) misses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from circuitry.attribution.architectures import architecture_for
from circuitry.attribution.eap import model_graph, score_samples
from circuitry.attribution.graph import Graph
from circuitry.attribution.hooks import input_device, install_hooks, scoring_mode
from circuitry.attribution.samples import Sample
from circuitry.attribution.window_loss import (
    known_losses,
    make_batch,
    sample_losses,
    target_gradient_lengths,
    unit_directions,
    window_logits,
)


def perturbed_loss(
    model: nn.Module,
    sample: Sample,
    target: str,
    eps: float | torch.Tensor,
    source: str | None = None,
    loss: str = "ce",
) -> torch.Tensor:
    """The sample's loss with `eps * O_source` subtracted from `target`'s own input copy only.

    With `source=None` the whole copy is scaled by (1 - eps). Uses the same hook points as
    scoring, so (L(eps) - L(-eps)) / (2 eps) approximates score[source, target]; a tensor
    `eps` that requires grad gives the exact derivative through autograd. `ce_unit` and
    `target_unit` are computed by their definitions (`circuitry.attribution.eap`), with the unit
    directions d_t or the lengths n_t taken from an unperturbed forward pass.
    """
    (loss,) = known_losses([loss])
    arch = architecture_for(model)
    graph = model_graph(model)
    column = graph.backward_index(target)
    row = None if source is None else graph.forward_index(source)
    if row is not None and not graph.edge_mask[row, column]:
        raise ValueError(f"no edge {source} -> {target}: {source} is computed after {target} reads")
    batch = make_batch([sample], input_device(model))
    with scoring_mode(model):
        reference = _clean_reference(model, batch, loss)
        with contextlib.ExitStack() as hooks:
            install_hooks(hooks, model, arch, graph, _Perturbation(column, row, eps))
            logits = window_logits(model, batch)
    return sample_losses(logits, batch, loss, reference).sum()


def _clean_reference(model: nn.Module, batch, loss: str) -> torch.Tensor | None:
    """What a loss fixes on an unhooked forward pass: `ce_unit`'s unit directions,
    `target_unit`'s lengths n_t (None for `ce`)."""
    if loss == "ce_unit":
        with torch.no_grad():
            return unit_directions(window_logits(model, batch), batch.targets)
    if loss != "target_unit":
        return None
    final_norm = model.get_submodule(architecture_for(model).final_norm)
    kept = {}

    def keep_input(module, args):
        kept["input"] = args[0].detach().requires_grad_(True)
        return (kept["input"], *args[1:])

    with torch.enable_grad(), final_norm.register_forward_pre_hook(keep_input):
        logits = window_logits(model, batch)
        return target_gradient_lengths(logits, kept["input"], batch).detach()


@dataclass(frozen=True)
class AblationCheck:
    """Scores against central finite differences of edge ablations, over the checked edges."""

    edges: list[tuple[str, str]]
    scores: np.ndarray
    finite_differences: np.ndarray

    @property
    def pearson_r(self) -> float:
        return float(np.corrcoef(self.scores, self.finite_differences)[0, 1])

    @property
    def max_abs_error(self) -> float:
        return float(np.max(np.abs(self.scores - self.finite_differences)))

    @property
    def max_abs_score(self) -> float:
        return float(np.max(np.abs(self.scores)))

    @property
    def relative_max_error(self) -> float:
        """Largest absolute error as a fraction of the largest |score|."""
        return self.max_abs_error / self.max_abs_score


def ablation_check(
    model: nn.Module,
    sample: Sample,
    eps: float = 1e-2,
    edges: Iterable[tuple[str, str]] | None = None,
    loss: str = "ce",
) -> AblationCheck:
    """Compare each edge's score under `loss` with (L(eps) - L(-eps)) / (2 eps) of its ablation.

    Two forward passes per edge: use it on a small float64 copy of an architecture (or on a
    few `edges`) to validate its adapter; the two then agree to O(eps^2). (RMSNorm computes
    in float32 even in float64 models, which is why eps should not be much smaller.)
    """
    graph = model_graph(model)
    edges = graph.edges() if edges is None else list(edges)
    matrix = score_samples(model, [sample], loss=loss, dtype=np.float64)[0]
    scores, differences = [], []
    for source, target in edges:
        plus = perturbed_loss(model, sample, target, eps, source, loss).item()
        minus = perturbed_loss(model, sample, target, -eps, source, loss).item()
        differences.append((plus - minus) / (2 * eps))
        scores.append(matrix[graph.forward_index(source), graph.backward_index(target)])
    return AblationCheck(edges, np.array(scores, dtype=np.float64), np.array(differences))


class _Perturbation:
    """Ablation callbacks: subtract eps * O_row (or eps * in_column) from one input copy."""

    def __init__(self, column: int, row: int | None, eps: float | torch.Tensor):
        self.column, self.row, self.eps = column, row, eps
        self.removed: torch.Tensor | None = None

    def on_input(self, residual: torch.Tensor) -> torch.Tensor:
        self.on_output(0, residual)
        return residual

    def on_output(self, row: int, output: torch.Tensor) -> None:
        if row == self.row:
            self.removed = output

    def read(self, column: int, residual: torch.Tensor) -> torch.Tensor:
        if column != self.column:
            return residual
        removed = residual if self.row is None else self.removed
        return residual - self.eps * removed

    def read_attention(self, column: int, normed, residual, norm: nn.Module) -> torch.Tensor:
        if column != self.column:
            return normed
        return norm.forward(self.read(column, residual))


def ablated_losses(
    model: nn.Module,
    sample: Sample,
    removed: Sequence[Sequence[tuple[int, int]]],
    *,
    loss: str = "ce",
    batch_size: int = 16,
) -> np.ndarray:
    """The sample's loss (float64 `[rows]`) with each row's edges `removed[r]` gone entirely.

    Each row lists edges as (forward, backward) axis indices of `model_graph(model)`; an
    empty row is the clean model. `batch_size` rows share one forward pass. `ce_unit` and
    `target_unit` take their directions or lengths from the clean forward pass, as
    `perturbed_loss` does.
    """
    (loss,) = known_losses([loss])
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    graph = model_graph(model)
    masks = _removal_masks(graph, removed)
    losses = np.empty(len(masks))
    with scoring_mode(model), torch.no_grad():
        for start in range(0, len(masks), batch_size):
            rows = slice(start, start + batch_size)
            losses[rows] = _ablated_batch(model, graph, sample, masks[rows], loss)
    return losses


def _removal_masks(graph: Graph, rows: Sequence[Sequence[tuple[int, int]]]) -> np.ndarray:
    """Boolean `[len(rows), n_forward, n_backward]` of the removed edges; a pair that is
    no edge of the graph fails, naming it."""
    masks = np.zeros((len(rows), graph.n_forward, graph.n_backward), dtype=bool)
    for r, edges in enumerate(rows):
        for source, target in edges:
            if not (0 <= source < graph.n_forward and 0 <= target < graph.n_backward):
                raise ValueError(
                    f"no edge ({source}, {target}) in a graph of shape {masks.shape[1:]}"
                )
            if not graph.edge_mask[source, target]:
                u, v = graph.forward_nodes[source], graph.backward_nodes[target]
                raise ValueError(f"no edge {u} -> {v}: {u} is computed after {v} reads")
            masks[r, source, target] = True
    return masks


def _ablated_batch(
    model: nn.Module, graph: Graph, sample: Sample, masks: np.ndarray, loss: str
) -> np.ndarray:
    """Losses of one forward pass whose row r removes the edges where `masks[r]` is True."""
    device = input_device(model)
    removed = torch.as_tensor(masks, device=device)
    return _removal_losses(model, graph, sample, removed, loss).double().cpu().numpy()


def _removal_losses(
    model: nn.Module, graph: Graph, sample: Sample, removed: torch.Tensor, loss: str
) -> torch.Tensor:
    """Losses `[rows]` of one forward pass whose row r subtracts `removed[r, u, v] * O_u`
    from every v's input copy (a boolean `removed` removes edges whole; a float one, which
    may require grad, removes those fractions of them)."""
    batch = make_batch([sample] * len(removed), input_device(model))
    reference = _clean_reference(model, batch, loss)
    with contextlib.ExitStack() as hooks:
        install_hooks(hooks, model, architecture_for(model), graph, _EdgeRemoval(removed))
        logits = window_logits(model, batch)
    return sample_losses(logits, batch, loss, reference)


def integrated_changes(
    model: nn.Module,
    sample: Sample,
    edges: Sequence[tuple[int, int]],
    *,
    steps: int = 10,
    loss: str = "ce",
    batch_size: int = 16,
) -> np.ndarray:
    """Per-edge integrated gradients (float64 `[len(edges)]`): with L(e) the loss when
    e * O_u is removed from v's input copy, the mean of dL/de at the midpoints e = (k -
    1/2) / `steps`, k = 1..steps, which estimates L(1) - L(0), the change `ablated_losses`
    measures (exactly where L is quadratic in e). EAP's score is dL/de at e = 0 alone.

    Each batch row is one (edge, point), its e a leaf tensor, so one forward and one
    backward pass give `batch_size` derivatives; the path never reaches e = 0 of the
    embedding itself, where a norm of a zero input is undefined.
    """
    (loss,) = known_losses([loss])
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    graph = model_graph(model)
    _removal_masks(graph, [[edge] for edge in edges])  # every edge a real one, or ValueError
    points = (np.arange(steps) + 0.5) / steps
    rows = [(edge, point) for edge in edges for point in points]
    slopes = np.empty(len(rows))
    device = input_device(model)
    with scoring_mode(model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            exact = {"dtype": torch.float64, "device": device}
            eps = torch.tensor([point for _, point in chunk], **exact, requires_grad=True)
            where = torch.tensor([[r, u, v] for r, ((u, v), _) in enumerate(chunk)], device=device)
            removed = torch.zeros(len(chunk), graph.n_forward, graph.n_backward, **exact)
            removed = removed.index_put(tuple(where.T), eps)
            losses = _removal_losses(model, graph, sample, removed, loss)
            (gradient,) = torch.autograd.grad(losses.sum(), eps)
            slopes[start : start + len(chunk)] = gradient.double().cpu().numpy()
    return slopes.reshape(len(edges), steps).mean(axis=1)


class _EdgeRemoval:
    """Full-ablation callbacks: row r of backward node v's input copy loses
    sum_u removed[r, u, v] * O_u.

    Only the outputs of removed sources are kept, each until the last node that loses it.
    """

    def __init__(self, removed: torch.Tensor):
        self.removed = removed
        used = (removed.detach() != 0).any(dim=0).cpu().numpy()  # [n_forward, n_backward]
        self.sources = [np.flatnonzero(used[:, column]).tolist() for column in range(used.shape[1])]
        self.last_reader = {
            int(u): int(np.flatnonzero(used[u])[-1]) for u in np.flatnonzero(used.any(axis=1))
        }
        self.outputs: dict[int, torch.Tensor] = {}

    def on_input(self, residual: torch.Tensor) -> torch.Tensor:
        self.on_output(0, residual)
        return residual

    def on_output(self, row: int, output: torch.Tensor) -> None:
        if row in self.last_reader:
            self.outputs[row] = output

    def read(self, column: int, residual: torch.Tensor) -> torch.Tensor:
        if not self.sources[column]:
            return residual
        weights = self.removed[:, :, column].to(residual.dtype)
        removed = sum(weights[:, u, None, None] * self.outputs[u] for u in self.sources[column])
        for u in self.sources[column]:
            if self.last_reader[u] == column:
                del self.outputs[u]
        return residual - removed

    def read_attention(self, column: int, normed, residual, norm: nn.Module) -> torch.Tensor:
        if not self.sources[column]:
            return normed
        return norm.forward(self.read(column, residual))
