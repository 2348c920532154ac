"""The loss window of a batch of samples: inputs, logits, the losses and their gradients.

The losses (`ce`, `ce_unit`, `target_unit`) are defined in `circuitry.attribution.eap`'s
docstring. Batches are right-padded and logits are computed only at the union of the
samples' loss positions. Shared by EAP scoring (`circuitry.attribution.eap`) and the edge
ablations (`circuitry.attribution.ablation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from circuitry.attribution.memory import STATISTICS_CHUNK
from circuitry.attribution.samples import Sample
from circuitry.attribution.scorefile import LOSSES

IGNORE = -100


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    keep: torch.Tensor
    targets: torch.Tensor
    cut_lens: torch.Tensor


def make_batch(samples: Sequence[Sample], device: torch.device) -> Batch:
    """Right-padded inputs, positions from 0, and targets at the union of loss positions.

    Logits are computed only at `keep` (the union of the samples' loss positions);
    `targets[b, k]` is the token sample b must predict at keep[k], or IGNORE.
    """
    length = max(len(s.tokens) for s in samples)
    input_ids = torch.zeros((len(samples), length), dtype=torch.long)
    attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
    keep = sorted({p for s in samples for p in s.loss_positions})
    column_of = {p: k for k, p in enumerate(keep)}
    targets = torch.full((len(samples), len(keep)), IGNORE, dtype=torch.long)
    for b, sample in enumerate(samples):
        tokens = sample.tokens
        input_ids[b, : len(tokens)] = torch.tensor(tokens)
        attention_mask[b, : len(tokens)] = 1
        for p in sample.loss_positions:
            targets[b, column_of[p]] = tokens[p + 1]
    positions = torch.arange(length).expand(len(samples), length)
    return Batch(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=positions.to(device),
        keep=torch.tensor(keep, device=device),
        targets=targets.to(device),
        cut_lens=torch.tensor([s.cut_len for s in samples], device=device),
    )


def window_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits `[batch, n_keep, vocab]` at the kept positions, in at least float32."""
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=batch.keep,
        use_cache=False,
    ).logits
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def position_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy `[batch, n_keep]` of each kept position; 0 where the target is IGNORE."""
    losses = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
    )
    return losses.view_as(targets)


@dataclass(frozen=True)
class PositionStatistics:
    """Per kept position `[batch, n_keep]`, 0 off the window: cross-entropy, predictive
    entropy and ||g_t||, g_t = softmax(z_t) - onehot(y_t)."""

    ce: torch.Tensor
    entropy: torch.Tensor
    grad_norm: torch.Tensor


def _position_chunks(logits: torch.Tensor) -> Iterator[slice]:
    """Slices of kept positions holding at most `STATISTICS_CHUNK` logits each."""
    step = max(1, STATISTICS_CHUNK // max(1, logits.shape[0] * logits.shape[2]))
    for start in range(0, logits.shape[1], step):
        yield slice(start, start + step)


def _softmax_gradient_(p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """g = p - onehot(y), in place on the probabilities `p`.

    The target's component is taken as minus the sum of the other probabilities, not
    p_y - 1: the subtraction loses every digit when p_y rounds to 1, which would drop the
    largest component of a very sure model's g_t and point its `ce_unit` direction wrong.
    """
    index = targets.clamp(min=0).unsqueeze(-1)
    p.scatter_(-1, index, 0.0)
    return p.scatter_(-1, index, -p.sum(dim=-1, keepdim=True))


@torch.no_grad()
def position_statistics(logits: torch.Tensor, targets: torch.Tensor) -> PositionStatistics:
    """The window statistics, computed in chunks of positions, so the softmax never holds
    more than `STATISTICS_CHUNK` elements beside the logits."""
    ce, entropy, grad_norm = (logits.new_zeros(targets.shape) for _ in range(3))
    for part in _position_chunks(logits):
        log_p = torch.log_softmax(logits[:, part], dim=-1)
        index = targets[:, part].clamp(min=0).unsqueeze(-1)
        ce[:, part] = -log_p.gather(-1, index).squeeze(-1)
        p = log_p.exp()
        log_p.clamp_(min=torch.finfo(log_p.dtype).min)  # 0 * log 0 = 0 for a -inf logit
        entropy[:, part] = -torch.linalg.vecdot(p, log_p)
        grad_norm[:, part] = torch.linalg.vector_norm(
            _softmax_gradient_(p, targets[:, part]), dim=-1
        )
    valid = targets != IGNORE
    return PositionStatistics(ce * valid, entropy * valid, grad_norm * valid)


@torch.no_grad()
def logit_gradient(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, loss: str
) -> torch.Tensor:
    """dL/dz of the loss sum_t w_t l_t: w_t g_t for `ce` and `ce_unit`, w_t c_t for
    `target_unit` (0 off the window), in chunks of positions."""
    gradient = torch.empty_like(logits)
    for part in _position_chunks(logits):
        if loss == "target_unit":
            g = _centred_target_gradient(logits[:, part], targets[:, part])
        else:
            g = _softmax_gradient_(torch.softmax(logits[:, part], dim=-1), targets[:, part])
        gradient[:, part] = g.mul_(weights[:, part, None])
    return gradient


def _centred_target_gradient(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """c = 1/V - onehot(y): the gradient at the logits of mean_j z_j - z_y."""
    share = 1.0 / logits.shape[-1]
    c = torch.full_like(logits, share)
    return c.scatter_(-1, targets.clamp(min=0).unsqueeze(-1), share - 1.0)


def target_gradient_lengths(
    logits: torch.Tensor, final_input: torch.Tensor, batch: Batch
) -> torch.Tensor:
    """n_t = ||J_t^T c_t||, the length at the final-norm input of the centred target logit's
    gradient, `[batch, n_keep]` (0 off the window).

    `final_input` `[batch, length, hidden]` is the final-norm input that `logits` were
    computed from, inside the autograd graph; one backward pass through the output head
    and the final norm gives every position's length, since each position's logits read
    only its own final-norm input.
    """
    valid = (batch.targets != IGNORE).to(logits.dtype)
    start = logit_gradient(logits.detach(), batch.targets, valid, "target_unit")
    (gradient,) = torch.autograd.grad(logits, final_input, start, retain_graph=True)
    return torch.linalg.vector_norm(gradient[:, batch.keep].to(logits.dtype), dim=-1) * valid


def start_lengths(
    loss: str, window: PositionStatistics, batch: Batch, vocab_size: int
) -> torch.Tensor:
    """||g_t|| (`ce`, `ce_unit`) or ||c_t|| = sqrt(1 - 1/V) (`target_unit`) per kept position:
    the length of the unweighted logit gradient each loss starts from (0 off the window)."""
    if loss == "target_unit":
        valid = (batch.targets != IGNORE).to(window.grad_norm.dtype)
        return valid * (1.0 - 1.0 / vocab_size) ** 0.5
    return window.grad_norm


def loss_weights(
    loss: str, grad_norm: torch.Tensor, batch: Batch, target_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Weights w_t of each loss's logit gradient: 1/W (`ce`, gradient w_t g_t),
    1/(W ||g_t||) (`ce_unit`, unit directions over W) and 1/(W n_t) (`target_unit`,
    gradient w_t c_t: unit length at the final-norm input)."""
    valid = (batch.targets != IGNORE).to(grad_norm.dtype)
    weights = valid / batch.cut_lens[:, None]
    if loss == "ce_unit":
        weights = torch.where(grad_norm > 0, weights / grad_norm, 0.0)
    elif loss == "target_unit":
        weights = torch.where(target_lengths > 0, weights / target_lengths, 0.0)
    return weights


def unit_directions(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """g_t / ||g_t|| at each window position, straight from the definition (0 elsewhere)."""
    g = torch.softmax(logits, dim=-1) - F.one_hot(targets.clamp(min=0), logits.shape[-1])
    g = g * (targets != IGNORE).unsqueeze(-1)
    norm = g.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, g / norm, 0.0)


def window_mean(values: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean over each sample's window of `[batch, n_keep]` values that are 0 off it."""
    return values.sum(dim=1) / batch.cut_lens


def known_losses(losses: Iterable[str]) -> tuple[str, ...]:
    """`losses` as a tuple, checked: distinct names from `LOSSES`, at least one."""
    losses = tuple(losses)
    if not losses or len(set(losses)) != len(losses) or not set(losses) <= set(LOSSES):
        raise ValueError(
            f"losses must be distinct names among {', '.join(LOSSES)}; got {list(losses)}"
        )
    return losses


def sample_losses(
    logits: torch.Tensor, batch: Batch, loss: str, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Each sample's loss `[batch]` by its definition: mean cross-entropy of its window
    (`ce`), the mean of <d_t, z_t> with the unit `reference` directions d_t of an
    unperturbed forward pass (`ce_unit`), or the mean of (mean_j z_tj - z_ty) / n_t with
    the `reference` lengths n_t of an unperturbed forward pass (`target_unit`)."""
    if loss == "ce_unit":
        return (reference * logits).sum(dim=(1, 2)) / batch.cut_lens
    if loss == "target_unit":
        weights = torch.where(reference > 0, 1.0 / reference, 0.0)
        centred = logits.mean(dim=-1) - logits.gather(
            -1, batch.targets.clamp(min=0).unsqueeze(-1)
        ).squeeze(-1)
        return (centred * weights).sum(dim=1) / batch.cut_lens
    return position_losses(logits, batch.targets).sum(dim=1) / batch.cut_lens
