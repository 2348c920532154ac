"""Edge Attribution Patching: one forward and one backward pass score every residual edge.

For a sample the model reads prompt + answer[:cut_len]; the loss L is the mean
cross-entropy of the model predicting its own window answer[:cut_len]. For a forward node
u (what it writes into the residual stream, O_u) and a backward node v (its own copy of
the residual stream, in_v; see `circuitry.attribution.graph`)

    score[u, v] = - sum over positions and hidden dims of O_u * dL/d(in_v),

the first-order change of L when O_u is removed from v's input only:
L(in_v - eps * O_u) = L - eps * <dL/d(in_v), O_u> + O(eps^2) = L + eps * score[u, v].

The hooks that buffer each O_u and contract each dL/d(in_v) are `circuitry.attribution.hooks`; the
window's batches and losses `circuitry.attribution.window_loss`; removing edges outright (finite
differences, full ablations) `circuitry.attribution.ablation`.

Completeness. In every supported family the residual stream read by v is exactly the sum
of the outputs of the forward nodes before it, in_v = sum_{u -> v} O_u (embeddings,
position embeddings and output-projection biases all enter inside some node; norm and
q/k/v biases act after the read). Hence for every backward node

    sum_u score[u, v] = - <dL/d(in_v), in_v>,

which `tests/test_eap.py` checks against autograd. Since every reader sits behind a
scale-invariant norm (RMSNorm, LayerNorm), that right-hand side is ~0 (only the norm's
epsilon breaks the invariance): the scores of each column nearly cancel.

Losses. With z_t the logits at window position t, y_t its target, W the window length,
g_t = softmax(z_t) - onehot(y_t) (the gradient of the position's cross-entropy), x_t the
final-norm input at t and J_t = dz_t/dx_t (final norm, then output head):

- `ce` (the paper's): (1/W) sum_t CE(z_t, y_t); its gradient at z_t is g_t / W, so a
  model that is merely surer of its window (smaller ||g_t||) gets smaller scores
  everywhere;
- `ce_unit`: (1/W) sum_t < stopgrad(g_t / ||g_t||_2), z_t >, directions fixed on the
  unperturbed forward. Its gradient at z_t is the paper's direction with length 1/W at
  every position. It is not confidence-free: a logit scale s still multiplies J_t, and
  a sharper model changes g_t's direction, so a pure temperature change moves it (x1.5
  reads about +60% intensity on the toy, `circuitry.analysis.calibration`);
- `target_unit` (the calibrated confidence-free reading): (1/W) sum_t
  (mean_j z_tj - z_ty_t) / stopgrad(n_t), the negative centred target logit in units of
  n_t = ||J_t^T c_t||, c_t = 1/V - onehot(y_t) its gradient at z_t, lengths fixed on the
  unperturbed forward. Its gradient at every x_t is a unit vector, the direction that
  raises the target logit above the mean logit. Scaling the logits by s > 0 scales
  z_t and n_t alike, so the loss, its gradient at every x_t and hence every score are
  unchanged: a temperature change reads exactly zero (tests check it in float64), while
  anything upstream of the final norm still moves the scores.

All losses come from one forward pass: each is one backward through the retained graph,
started at the logits with the loss's gradient w_t g_t (w_t = 1/W for `ce`,
1/(W ||g_t||) for `ce_unit`) or w_t c_t (w_t = 1/(W n_t) for `target_unit`). g_t is built
from the softmax with its target component taken as minus the sum of the other
probabilities, so it stays exact where p_y rounds to 1 (autograd's p_y - 1 would lose
it, and point a sure model's unit directions wrong). A position whose start gradient is
exactly 0 contributes nothing.

Diagnostics (per sample, `DIAGNOSTICS`): the window's mean cross-entropy, the mean
predictive entropy of the model over the window positions, the mean over window
positions of ||dL/dz_t||_2 (the norm of the gradient each backward pass starts from) and
the Frobenius norm of dL/d(final-norm input) (read off that backward pass) under each
loss, and the window length used. They say how sure the
model is of the window, which the `ce` scores scale with.

Batches are right-padded; each sample's loss is its own mean over its window and the
batch loss is their sum, so batching never changes a sample's scores.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from circuitry.attribution.architectures import Architecture, architecture_for
from circuitry.attribution.graph import Graph, build_graph
from circuitry.attribution.hooks import (
    EdgeScorer,
    checkpointed_layers,
    input_device,
    install_hooks,
    scoring_mode,
)
from circuitry.attribution.memory import (
    ModelShape,
    batch_peak_bytes,
    gib,
    memory_budget,
    model_shape,
    sample_peak_bytes,
)
from circuitry.attribution.samples import Sample, condition_samples, text_role
from circuitry.attribution.scorefile import DIAGNOSTICS, LOSSES, write_score_files
from circuitry.attribution.window_loss import (
    known_losses,
    logit_gradient,
    loss_weights,
    make_batch,
    position_statistics,
    start_lengths,
    target_gradient_lengths,
    window_logits,
    window_mean,
)
from circuitry.generation.pairing import PAPER_CONTEXT_CAPS
from circuitry.models.loading import choose_device, choose_dtype
from circuitry.models.sources import model_config

log = logging.getLogger(__name__)


def model_graph(model: nn.Module, granularity: str = "block") -> Graph:
    """The EAP graph of `model` (node names and edge mask of its score matrices)."""
    arch = architecture_for(model)
    return build_graph(len(arch.decoder_layers(model)), granularity)


@dataclass(frozen=True)
class ScoredWindows:
    """EAP scores of samples under one loss, with each sample's `DIAGNOSTICS`."""

    loss: str
    scores: np.ndarray  # [n_samples, n_forward, n_backward]
    diagnostics: dict[str, np.ndarray]  # name -> [n_samples]


def score_windows(
    model: nn.Module,
    samples: Iterable[Sample],
    losses: Sequence[str] = LOSSES,
    *,
    batch_size: int = 1,
    memory_budget: int | None = None,
    progress: bool = False,
    dtype: type = np.float32,
) -> dict[str, ScoredWindows]:
    """EAP scores of every edge for each sample under each loss: `{loss: ScoredWindows}`.

    Scores are `[n_samples, n_forward, n_backward]` in `dtype`, axes following
    `model_graph(model)`, non-edges exactly 0. One forward pass per batch serves every
    loss. Samples are batched by length (right-padded) and returned in input order. The
    model's train/eval mode, gradient checkpointing and `requires_grad` flags are restored
    afterwards. Non-finite scores or diagnostics raise a ValueError naming the sample.
    `dtype=np.float64` keeps the full precision of a float64 model (for exactness checks).

    `memory_budget` (bytes beside the weights; None: no limit) caps each batch's predicted
    peak (`circuitry.attribution.memory`); a sample that fits only with its layers
    checkpointed is scored alone that way, and one that does not fit at all fails before
    any is scored (`check_fits`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    losses = known_losses(losses)
    arch = architecture_for(model)
    graph = model_graph(model)
    samples = list(samples)
    shape = model_shape(model) if memory_budget is not None else None
    if shape is not None:
        check_fits(shape, samples, len(losses), memory_budget)
    scores = np.zeros((len(losses), len(samples), graph.n_forward, graph.n_backward), dtype=dtype)
    diagnostics = np.zeros((len(losses), len(DIAGNOSTICS), len(samples)))
    log.info(
        "EAP: %d samples, %d edges, losses %s, batch size %d (%s)",
        len(samples),
        graph.n_edges,
        ", ".join(losses),
        batch_size,
        type(model).__name__,
    )
    with (
        scoring_mode(model),
        tqdm(total=len(samples), disable=not progress, desc="EAP", unit="sample") as bar,
    ):
        for indices in _length_sorted_batches(samples, batch_size, shape, memory_budget, losses):
            batch = [samples[i] for i in indices]
            checkpointing = (
                shape is not None and batch_peak_bytes(shape, batch, len(losses)) > memory_budget
            )
            with checkpointed_layers(model, arch) if checkpointing else contextlib.nullcontext():
                batch_scores, batch_diagnostics = _score_batch(model, arch, graph, batch, losses)
            _check_finite(batch_scores, batch_diagnostics, batch, indices)
            scores[:, indices] = batch_scores
            diagnostics[:, :, indices] = batch_diagnostics
            bar.update(len(indices))
    return {
        loss: ScoredWindows(loss, scores[k], dict(zip(DIAGNOSTICS, diagnostics[k], strict=True)))
        for k, loss in enumerate(losses)
    }


def check_fits(
    shape: ModelShape, samples: Sequence[Sample], n_losses: int, memory_budget: int
) -> None:
    """Raise before any scoring when a sample exceeds `memory_budget` even with its layers
    checkpointed: names the sample that needs most, its tokens and the memory it needs."""
    needs = [
        (sample_peak_bytes(shape, sample, n_losses, checkpointing=True), index, sample)
        for index, sample in enumerate(samples)
    ]
    beyond = [need for need in needs if need[0] > memory_budget]
    if beyond:
        need, index, sample = max(beyond, key=lambda item: item[0])
        raise MemoryError(
            f"EAP of sample {_sample_name(sample, index)} ({len(sample.tokens)} tokens, a "
            f"window of {sample.cut_len}) needs {gib(need)} beside the weights even with "
            f"its layers checkpointed, more than the {gib(memory_budget)} available; "
            f"{len(beyond)} of {len(samples)} samples do not fit. Use a device with more "
            "memory, or smaller alphas (shorter windows)"
        )


def score_distinct_windows(
    model: nn.Module,
    conditions: Mapping[Hashable, Sequence[Sample]],
    losses: Sequence[str] = LOSSES,
    **options,
) -> dict[Hashable, dict[str, ScoredWindows]]:
    """`score_windows` of several sample lists, each distinct window scored once.

    A sample's scores and diagnostics depend only on what the model reads (`tokens`) and
    its window (`cut_len`): an alpha whose window equals another's, or a crossed answer
    that equals the model's own up to the window's end, repeats a computation. The
    distinct windows of all `conditions` are scored together (`options` as for
    `score_windows`) and each condition gets its samples' rows, in its order.
    """
    rows_of: dict[tuple, int] = {}
    distinct: list[Sample] = []
    for samples in conditions.values():
        for sample in samples:
            key = _window_key(sample)
            if key not in rows_of:
                rows_of[key] = len(distinct)
                distinct.append(sample)
    scored = score_windows(model, distinct, losses, **options)
    log.info("%d distinct windows of %d", len(distinct), sum(map(len, conditions.values())))
    result = {}
    for name, samples in conditions.items():
        rows = np.array([rows_of[_window_key(sample)] for sample in samples], dtype=np.int64)
        result[name] = {
            loss: ScoredWindows(
                loss,
                windows.scores[rows],
                {key: values[rows] for key, values in windows.diagnostics.items()},
            )
            for loss, windows in scored.items()
        }
    return result


def _window_key(sample: Sample) -> tuple:
    return tuple(sample.tokens), sample.cut_len


def paper_context_excess(model: nn.Module, samples: Sequence[Sample]) -> str | None:
    """Why some of `samples` have no counterpart in the paper: their prompt + window
    exceeds the context its TransformerLens gave the model's family (`PAPER_CONTEXT_CAPS`).
    None when every sample fits, or the family had no cap."""
    model_type = getattr(model.config, "model_type", None)
    cap = PAPER_CONTEXT_CAPS.get(model_type)
    beyond = [s for s in samples if cap is not None and len(s.tokens) > cap]
    if not beyond:
        return None
    return (
        f"{len(beyond)} of {len(samples)} samples read more than the {cap} tokens of the "
        f"paper's TransformerLens context for {model_type}: the paper could not score them"
    )


def role_memory_budget(
    spec: dict,
    role: str,
    pair_rows: Mapping[str, Sequence[dict]],
    summaries: Mapping[str, Mapping],
    files: Mapping[tuple[str, str, str, str, str], str | os.PathLike],
    losses: Sequence[str],
    memory_gib: float | None = None,
) -> int | None:
    """The memory budget (`score_windows`) of scoring `role`'s conditions of `files` on the
    device its model will load on, every sample checked against it (`check_fits`) from
    the model's config alone, before its weights load. None on CPU without `memory_gib`."""
    device = choose_device(spec)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    if total is None and not memory_gib:
        return None
    dtype = str(choose_dtype(spec, device)).removeprefix("torch.")
    shape = ModelShape.from_config(model_config(spec), dtype)
    budget = memory_budget(shape, total, memory_gib)
    conditions = condition_samples(
        role, pair_rows, summaries, [key[1:4] for key in files if key[0] == role]
    )
    samples = [sample for _, listed in conditions.values() for sample in listed]
    check_fits(shape, samples, len(losses), budget)
    return budget


def write_role_scores(
    model: nn.Module,
    role: str,
    pair_rows: Mapping[str, Sequence[dict]],
    summaries: Mapping[str, Mapping],
    files: Mapping[tuple[str, str, str, str, str], str | os.PathLike],
    losses: Sequence[str] = LOSSES,
    *,
    batch_size: int = 1,
    memory_budget: int | None = None,
    progress: bool = False,
) -> None:
    """Score one model of a pair (`role`, base or tuned) and write its score file of
    every condition: what rule `eap_score` does with each model it loads.

    `files` maps (role, dataset, alpha, text, loss) to a score file (alpha as in paths);
    those of `role` are written, one per loss of `losses` for each of its (dataset,
    alpha, text), and every (dataset, alpha, text) of `role` must have a file for each of
    them. `pair_rows` holds each dataset's paired rows (the pair file), `summaries` its
    pairing summary (`circuitry.generation.pairing.pair_samples`), which gives the window
    of each alpha (`cut_length`) and the reference length T. The samples of every
    condition are scored together, each distinct window once (`score_distinct_windows`,
    batched within `memory_budget`); a condition whose samples read beyond the paper's
    context (`paper_context_excess`) is logged as a warning when its pairing follows the
    paper's code (mode `paper`).
    """
    reference = {
        d: Fraction(summary["reference_length_fraction"]) for d, summary in summaries.items()
    }
    conditions = condition_samples(
        role, pair_rows, summaries, [key[1:4] for key in files if key[0] == role]
    )
    for (dataset, alpha, text), (cut_len, samples) in conditions.items():
        log.info(
            "%s on %s, alpha %s, %s text: %d samples, T = %s, cut_len %d",
            role,
            dataset,
            alpha,
            text,
            len(samples),
            reference[dataset],
            cut_len,
        )
        excess = paper_context_excess(model, samples)
        if excess and summaries[dataset]["settings"]["mode"] == "paper":
            log.warning("%s on %s, alpha %s, %s text: %s", role, dataset, alpha, text, excess)
    scored = score_distinct_windows(
        model,
        {condition: samples for condition, (_, samples) in conditions.items()},
        losses,
        batch_size=batch_size,
        memory_budget=memory_budget,
        progress=progress,
    )
    graph = model_graph(model).as_arrays()
    for (dataset, alpha, text), by_loss in scored.items():
        write_score_files(
            {loss: files[role, dataset, alpha, text, loss] for loss in by_loss},
            by_loss,
            idx=np.array([row["idx"] for row in pair_rows[dataset]]),
            graph=graph,
            condition={
                "alpha": float(alpha),
                "cut_len": conditions[dataset, alpha, text][0],
                "reference_length": float(reference[dataset]),
                "role": role,
                "text": text,
                "text_role": text_role(role, text),
                "model_type": model.config.model_type,
            },
        )


def score_samples(
    model: nn.Module,
    samples: Iterable[Sample],
    *,
    loss: str = "ce",
    batch_size: int = 1,
    progress: bool = False,
    dtype: type = np.float32,
) -> np.ndarray:
    """EAP scores `[n_samples, n_forward, n_backward]` under one loss (see `score_windows`)."""
    return score_windows(
        model, samples, (loss,), batch_size=batch_size, progress=progress, dtype=dtype
    )[loss].scores


def _score_batch(
    model, arch: Architecture, graph: Graph, samples: list[Sample], losses: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Scores `[n_losses, batch, n_forward, n_backward]` and diagnostics
    `[n_losses, len(DIAGNOSTICS), batch]`: one forward pass, one backward pass per loss.

    Each backward pass starts at the logits with the loss's gradient (w_t g_t, built from
    the window statistics: what autograd would give for sum_t w_t CE_t, with g_t's target
    component exact; or w_t c_t for `target_unit`, whose lengths n_t take one backward
    pass through the output head first, which scores nothing).
    """
    scorer = EdgeScorer(graph, len(losses))
    batch = make_batch(samples, input_device(model))
    grad_logits_norms = []
    with contextlib.ExitStack() as hooks:
        install_hooks(hooks, model, arch, graph, scorer)
        logits = window_logits(model, batch)
        window = position_statistics(logits.detach(), batch.targets)
        lengths = None
        if "target_unit" in losses:
            lengths = target_gradient_lengths(logits, scorer.final_input, batch)
        for k, loss in enumerate(losses):
            scorer.start(k)
            weights = loss_weights(loss, window.grad_norm, batch, lengths)
            gradient = logit_gradient(logits.detach(), batch.targets, weights, loss)
            torch.autograd.grad(logits, scorer.sink, gradient, retain_graph=k + 1 < len(losses))
            del gradient
            scorer.finish_pass()
            starts = start_lengths(loss, window, batch, logits.shape[-1])
            grad_logits_norms.append(window_mean(weights * starts, batch))
    shared = {
        "window_ce": window_mean(window.ce, batch),
        "window_entropy": window_mean(window.entropy, batch),
        "window_len": batch.cut_lens,
    }
    diagnostics = [
        torch.stack(
            [
                {
                    **shared,
                    "grad_logits_norm": grad_logits_norms[k],
                    "grad_final_norm_input": scorer.final_grad_norms[k],
                }[name].to(torch.float64)
                for name in DIAGNOSTICS
            ]
        )
        for k in range(len(losses))
    ]
    return scorer.scores.cpu().numpy(), torch.stack(diagnostics).cpu().numpy()


def _check_finite(
    scores: np.ndarray, diagnostics: np.ndarray, samples: Sequence[Sample], indices: Sequence[int]
) -> None:
    """Raise naming the samples whose scores or diagnostics (any loss) are NaN or inf."""
    by_sample = {"scores": np.moveaxis(scores, 1, 0), "diagnostics": np.moveaxis(diagnostics, 2, 0)}
    for what, values in by_sample.items():
        finite = np.isfinite(values)
        bad = [
            _sample_name(sample, index)
            for sample, index, ok in zip(samples, indices, finite, strict=True)
            if not ok.all()
        ]
        if bad:
            raise ValueError(
                f"EAP {what} are not finite (NaN or inf) for sample(s) {', '.join(bad)}"
            )


def _sample_name(sample: Sample, index: int) -> str:
    if sample.sample_id is None:
        return f"#{index}"
    return f"{sample.sample_id!r} (#{index})"


def _length_sorted_batches(
    samples: Sequence[Sample],
    batch_size: int,
    shape: ModelShape | None,
    memory_budget: int | None,
    losses: Sequence[str],
) -> Iterator[list[int]]:
    """Indices in batches of similar length, so right-padding wastes little compute; a
    batch also stops growing where its predicted peak (`shape`) would pass `memory_budget`."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].tokens))
    batch: list[int] = []
    for index in order:
        grown = [*batch, index]
        full = len(batch) == batch_size or (
            memory_budget is not None
            and batch
            and batch_peak_bytes(shape, [samples[i] for i in grown], len(losses)) > memory_budget
        )
        if full:
            yield batch
            grown = [index]
        batch = grown
    if batch:
        yield batch
