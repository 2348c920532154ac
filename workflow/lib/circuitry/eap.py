"""Edge Attribution Patching: one forward and one backward pass score every residual edge.

For a sample the model reads prompt + answer[:cut_len]; the loss L is the mean
cross-entropy of the model predicting its own window answer[:cut_len]. For a forward node
u (what it writes into the residual stream, O_u) and a backward node v (its own copy of
the residual stream, in_v; see `circuitry.graph`)

    score[u, v] = - sum over positions and hidden dims of O_u * dL/d(in_v),

the first-order change of L when O_u is removed from v's input only:
L(in_v - eps * O_u) = L - eps * <dL/d(in_v), O_u> + O(eps^2) = L + eps * score[u, v].

How it is computed, with plain torch hooks on the Hugging Face modules:

- Forward nodes: the residual entering the first layer (`input`), each attention output
  projection and each MLP output are copied once into a float32 buffer
  [batch, n_forward, T, hidden] (float64 for a float64 model, which the exactness tests use).
- Backward nodes get their own copy of the residual. The MLP reads a view at the
  post-attention norm input (not the skip path), the logits a view at the final norm
  input. q, k and v each read their own view of the pre-attention norm's output (a fused
  q/k/v projection is computed as its three column slices, each from its own view); when
  a view's gradient arrives, the norm's backward is re-run on the kept norm input, which
  gives dL/d(in_q), dL/d(in_k), dL/d(in_v) apart while the model stores the norm's
  activations once, as without EAP.
- A gradient hook on each view contracts dL/d(in_v) with the buffered outputs of the nodes
  before v as soon as autograd produces it; q, k and v of a layer share one contraction.
  Gradients are never stored and parameter gradients are never computed (parameters are
  frozen during scoring; autograd only runs back to the first layer's input).
- The edge ablation of `perturbed_loss` uses the same hook points: q, k or v re-run the
  norm on their own perturbed copy of its input.

Completeness. In every supported family the residual stream read by v is exactly the sum
of the outputs of the forward nodes before it, in_v = sum_{u -> v} O_u (embeddings,
position embeddings and output-projection biases all enter inside some node; norm and
q/k/v biases act after the read). Hence for every backward node

    sum_u score[u, v] = - <dL/d(in_v), in_v>,

which `tests/test_eap.py` checks against autograd. Since every reader sits behind a
scale-invariant norm (RMSNorm, LayerNorm), that right-hand side is ~0 (only the norm's
epsilon breaks the invariance): the scores of each column nearly cancel.

Losses. With z_t the logits at window position t, y_t its target, W the window length
and g_t = softmax(z_t) - onehot(y_t) (the gradient of the position's cross-entropy):

- `ce` (the paper's): (1/W) sum_t CE(z_t, y_t); its gradient at z_t is g_t / W, so a
  model that is merely surer of its window (smaller ||g_t||) gets smaller scores
  everywhere;
- `ce_unit` (confidence-free): (1/W) sum_t < stopgrad(g_t / ||g_t||_2), z_t >, directions
  fixed on the unperturbed forward. Its gradient at z_t is the paper's direction with
  length 1/W at every position. A position with g_t = 0 exactly contributes nothing.

All losses come from one forward pass: each is one backward through the retained graph,
started at the logits with the loss's gradient w_t g_t (w_t = 1/W for `ce`,
1/(W ||g_t||) for `ce_unit`). g_t is built from the softmax with its target component
taken as minus the sum of the other probabilities, so it stays exact where p_y rounds to
1 (autograd's p_y - 1 would lose it, and point a sure model's unit directions wrong).

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
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from circuitry.architectures import Architecture, LayerModules, architecture_for, project_slice
from circuitry.fidelity import PAPER_CONTEXT_CAPS
from circuitry.graph import Graph, attention_index, build_graph, mlp_column, mlp_index, qkv_columns
from circuitry.scorefile import DIAGNOSTICS, LOSSES, TEXTS

log = logging.getLogger(__name__)

IGNORE = -100
# Logit elements per chunk of the window statistics: two float32 chunks (32 MiB) beside
# the logits, whatever the vocabulary and window.
STATISTICS_CHUNK = 1 << 22


@dataclass(frozen=True)
class Sample:
    """One prompt and its answer; the loss window is the first `cut_len` answer tokens.

    `sample_id` only names the sample in error messages.
    """

    prompt_token_ids: Sequence[int]
    answer_token_ids: Sequence[int]
    cut_len: int
    sample_id: object = None

    def __post_init__(self) -> None:
        if len(self.prompt_token_ids) < 1:
            raise ValueError(f"sample {self.sample_id!r}: the prompt has no tokens")
        if not 1 <= self.cut_len <= len(self.answer_token_ids):
            raise ValueError(
                f"sample {self.sample_id!r}: cut_len={self.cut_len} is outside "
                f"[1, {len(self.answer_token_ids)}] (the answer's length)"
            )

    @property
    def tokens(self) -> list[int]:
        """What the model reads: the prompt and the answer window."""
        return [*self.prompt_token_ids, *self.answer_token_ids[: self.cut_len]]

    @property
    def loss_positions(self) -> range:
        """Positions whose logits predict the window tokens."""
        start = len(self.prompt_token_ids) - 1
        return range(start, start + self.cut_len)


def text_role(role: str, text: str) -> str:
    """Whose answer the `role` model reads: its own, or the other role's (`crossed`)."""
    if text not in TEXTS:
        raise ValueError(f"unknown text {text!r}; known: {', '.join(TEXTS)}")
    if text == "own":
        return role
    return {"base": "tuned", "tuned": "base"}[role]


def windowed_samples(
    pair_rows: Sequence[dict], role: str, cut_len: int, text: str = "own"
) -> list[Sample]:
    """The `role` model's prompt with the answer of `text_role(role, text)` for each paired
    row, its window the first `cut_len` answer tokens (the whole answer where that is
    shorter: the length filters allow answers down to 0.375 T, shorter than the window of
    alpha 0.5). Crossed text keeps the scoring model's own prompt: it reads the other
    answer as if it had written it."""
    author = text_role(role, text)
    return [
        Sample(
            prompt_token_ids=row[role]["prompt_token_ids"],
            answer_token_ids=row[author]["completion_token_ids"],
            cut_len=min(cut_len, len(row[author]["completion_token_ids"])),
            sample_id=row["idx"],
        )
        for row in pair_rows
    ]


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
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    losses = _known_losses(losses)
    arch = architecture_for(model)
    graph = model_graph(model)
    samples = list(samples)
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
        _scoring_mode(model),
        tqdm(total=len(samples), disable=not progress, desc="EAP", unit="sample") as bar,
    ):
        for indices in _length_sorted_batches(samples, batch_size):
            batch = [samples[i] for i in indices]
            batch_scores, batch_diagnostics = _score_batch(model, arch, graph, batch, losses)
            _check_finite(batch_scores, batch_diagnostics, batch, indices)
            scores[:, indices] = batch_scores
            diagnostics[:, :, indices] = batch_diagnostics
            bar.update(len(indices))
    return {
        loss: ScoredWindows(loss, scores[k], dict(zip(DIAGNOSTICS, diagnostics[k], strict=True)))
        for k, loss in enumerate(losses)
    }


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
    `eps` that requires grad gives the exact derivative through autograd. `ce_unit` is
    computed by its definition, (1/W) sum_t <d_t, z_t> with the unit directions d_t taken
    from an unperturbed forward pass.
    """
    (loss,) = _known_losses([loss])
    arch = architecture_for(model)
    graph = model_graph(model)
    column = graph.backward_index(target)
    row = None if source is None else graph.forward_index(source)
    if row is not None and not graph.edge_mask[row, column]:
        raise ValueError(f"no edge {source} -> {target}: {source} is computed after {target} reads")
    batch = _make_batch([sample], _input_device(model))
    with _scoring_mode(model):
        if loss == "ce_unit":
            with torch.no_grad():
                directions = _unit_directions(_window_logits(model, batch), batch.targets)
        with contextlib.ExitStack() as hooks:
            _install_hooks(hooks, model, arch, graph, _Perturbation(column, row, eps))
            logits = _window_logits(model, batch)
    if loss == "ce_unit":
        return ((directions * logits).sum(dim=(1, 2)) / batch.cut_lens).sum()
    return (_position_losses(logits, batch.targets).sum(dim=1) / batch.cut_lens).sum()


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


# --- hooks ------------------------------------------------------------------------------


class _EdgeScorer:
    """Scoring callbacks: buffer forward outputs, contract gradients of the input copies.

    One forward pass serves several backward passes (one per loss): `start(k)` directs the
    next pass into `scores[k]`, and `finish_pass()` ends it. The logits column also records
    the Frobenius norm of its gradient (dL/d(final-norm input)) per sample and pass.
    """

    def __init__(self, graph: Graph, n_passes: int = 1):
        self.graph = graph
        self.n_passes = n_passes
        self.current = 0
        self.buffer: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None
        self.final_grad_norms: torch.Tensor | None = None
        self.sink: torch.Tensor | None = None
        self.dtype = torch.float32
        self.pending: dict[int, dict[int, torch.Tensor]] = {}
        self.norm_inputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}

    def on_input(self, residual: torch.Tensor) -> torch.Tensor:
        """Start the graph at the first layer's input; allocate buffers of the batch's shape."""
        batch, length, hidden = residual.shape
        self.dtype = torch.promote_types(residual.dtype, torch.float32)
        self.buffer = residual.new_zeros(
            (batch, self.graph.n_forward, length, hidden), dtype=self.dtype
        )
        self.scores = residual.new_zeros(
            (self.n_passes, batch, self.graph.n_forward, self.graph.n_backward), dtype=self.dtype
        )
        self.final_grad_norms = residual.new_zeros((self.n_passes, batch), dtype=self.dtype)
        self.sink = residual.detach().requires_grad_(True)
        self.on_output(0, self.sink)
        return self.sink

    def on_output(self, row: int, output: torch.Tensor) -> None:
        self.buffer[:, row].copy_(output.detach())

    def read(self, column: int, residual: torch.Tensor) -> torch.Tensor:
        copy = residual.view_as(residual)
        copy.register_hook(lambda grad: self._collect(column, grad))
        return copy

    def read_attention(self, column: int, normed, residual, norm: nn.Module) -> torch.Tensor:
        """A view of the norm's output whose gradient is q's (k's, v's) alone; the norm's
        backward is applied to it in `_contract`, from the kept norm input."""
        self.norm_inputs[self.graph.n_inputs[column]] = (norm, residual)
        return self.read(column, normed)

    def start(self, index: int) -> None:
        """Direct the next backward pass into `scores[index]`."""
        self.current = index

    def _collect(self, column: int, grad: torch.Tensor) -> None:
        """Gather the gradients of columns reading the same prefix (a layer's q, k, v)."""
        if column == self.graph.n_backward - 1:
            norms = grad.to(self.dtype).flatten(1).norm(dim=1)
            self.final_grad_norms[self.current] = norms
        n_inputs = self.graph.n_inputs[column]
        group = self.pending.setdefault(n_inputs, {})
        group[column] = grad
        if len(group) == self.graph.n_inputs.count(n_inputs):
            self._contract(n_inputs, self.pending.pop(n_inputs))

    def _contract(self, n_inputs: int, grads: dict[int, torch.Tensor]) -> None:
        """scores[:, u, v] -= <O_u, dL/d(in_v)> for the group's columns v and all u before them.

        One matrix product per group reads the buffered outputs once; a layer's q, k and v
        gradients first go back through the pre-attention norm, one at a time.
        """
        columns = sorted(grads)
        norm = self.norm_inputs.get(n_inputs)
        batch, _, length, hidden = self.buffer.shape
        stacked = self.buffer.new_empty((batch, len(columns), length, hidden))
        for i, column in enumerate(columns):
            grad = grads.pop(column)
            stacked[:, i] = grad if norm is None else _norm_backward(*norm, grad)
        outputs = self.buffer[:, :n_inputs].flatten(2)
        product = torch.matmul(outputs, stacked.flatten(2).transpose(1, 2))
        self.scores[self.current, :, :n_inputs, columns] -= product

    def finish_pass(self) -> None:
        """Contract groups some of whose gradients never arrived (those are zero)."""
        for n_inputs in list(self.pending):
            self._contract(n_inputs, self.pending.pop(n_inputs))


def _norm_backward(norm: nn.Module, residual: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A gradient at a norm's output, taken back to the norm's input.

    The norm is re-run on the kept input (elementwise work) for each of q, k and v, so the
    model stores the norm's activations only once however many readers it has.
    """
    copy = residual.detach().requires_grad_(True)
    with torch.enable_grad():
        (result,) = torch.autograd.grad(norm.forward(copy), copy, grad)
    return result


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


def _install_hooks(
    stack: contextlib.ExitStack, model, arch: Architecture, graph: Graph, cb
) -> None:
    """Hook where forward nodes write and backward nodes read the residual stream.

    `cb.on_input(x)` sees the first layer's input and returns what the layer reads,
    `cb.on_output(row, tensor)` each forward node's output, `cb.read(column, residual)`
    returns backward node `column`'s own copy of the residual (MLP, logits), and
    `cb.read_attention(column, normed, residual, norm)` the input of q, k or v given the
    pre-attention norm's output `normed = norm(residual)`. Every handle goes into `stack`,
    so leaving it removes all hooks, also after an exception.
    """
    layers = arch.decoder_layers(model)
    stack.enter_context(
        layers[0].register_forward_pre_hook(_replacing_hidden_states(cb.on_input), with_kwargs=True)
    )
    for index, layer in enumerate(layers):
        _install_layer_hooks(stack, index, arch.layer_modules(layer), cb)
    final_norm = model.get_submodule(arch.final_norm)
    logits = graph.n_backward - 1
    stack.enter_context(final_norm.register_forward_pre_hook(_reading_input(cb, logits)))


def _install_layer_hooks(stack: contextlib.ExitStack, index: int, mods: LayerModules, cb) -> None:
    attn: dict[str, torch.Tensor] = {}

    def keep_residual(module, args):
        attn["residual"] = args[0]

    def attention_input(column: int, normed: torch.Tensor) -> torch.Tensor:
        return cb.read_attention(column, normed, attn["residual"], mods.attn_norm)

    hooks = [
        mods.attn_norm.register_forward_pre_hook(keep_residual),
        mods.attn_out.register_forward_hook(_writing_output(cb, attention_index(index))),
        mods.mlp_norm.register_forward_pre_hook(_reading_input(cb, mlp_column(index))),
        mods.mlp.register_forward_hook(_writing_output(cb, mlp_index(index))),
    ]
    columns = qkv_columns(index)
    if mods.fused is None:
        for column, projection in zip(columns, mods.projections, strict=True):
            hooks.append(
                projection.register_forward_pre_hook(_replacing_input(attention_input, column))
            )
    else:
        hooks += _fused_qkv_hooks(mods.fused, mods.fused_slices, columns, attention_input)
    for hook in hooks:
        stack.enter_context(hook)


def _fused_qkv_hooks(module: nn.Module, slices, columns, attention_input: Callable) -> list:
    """Compute a fused q/k/v projection as three slices, each from its own input copy.

    The module itself then runs on a single token (its output is replaced), so the
    projection FLOPs stay those of the model.
    """
    normed: dict[str, torch.Tensor] = {}

    def shrink_input(module, args):
        normed["input"] = args[0]
        return (args[0][:1, :1], *args[1:])

    def sliced_output(module, args, output):
        hidden = normed.pop("input")
        parts = [
            project_slice(module, attention_input(column, hidden), columns_)
            for column, columns_ in zip(columns, slices, strict=True)
        ]
        return torch.cat(parts, dim=-1)

    return [
        module.register_forward_pre_hook(shrink_input),
        module.register_forward_hook(sliced_output),
    ]


def _replacing_hidden_states(fn: Callable[[torch.Tensor], torch.Tensor]):
    """A with_kwargs pre-hook replacing a decoder layer's hidden states by fn(hidden states)."""

    def hook(module, args, kwargs):
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

    return hook


def _replacing_input(input_for: Callable[[int, torch.Tensor], torch.Tensor], column: int):
    def hook(module, args):
        return (input_for(column, args[0]), *args[1:])

    return hook


def _reading_input(cb, column: int):
    def hook(module, args):
        return (cb.read(column, args[0]), *args[1:])

    return hook


def _writing_output(cb, row: int):
    def hook(module, args, output):
        cb.on_output(row, output[0] if isinstance(output, tuple) else output)

    return hook


# --- batches, loss, model state -----------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    keep: torch.Tensor
    targets: torch.Tensor
    cut_lens: torch.Tensor


def _make_batch(samples: Sequence[Sample], device: torch.device) -> _Batch:
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
    return _Batch(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=positions.to(device),
        keep=torch.tensor(keep, device=device),
        targets=targets.to(device),
        cut_lens=torch.tensor([s.cut_len for s in samples], device=device),
    )


def _window_logits(model: nn.Module, batch: _Batch) -> torch.Tensor:
    """Logits `[batch, n_keep, vocab]` at the kept positions, in at least float32."""
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=batch.keep,
        use_cache=False,
    ).logits
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _position_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy `[batch, n_keep]` of each kept position; 0 where the target is IGNORE."""
    losses = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
    )
    return losses.view_as(targets)


@dataclass(frozen=True)
class _PositionStatistics:
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
def _position_statistics(logits: torch.Tensor, targets: torch.Tensor) -> _PositionStatistics:
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
    return _PositionStatistics(ce * valid, entropy * valid, grad_norm * valid)


@torch.no_grad()
def _logit_gradient(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor):
    """dL/dz of the loss sum_t w_t CE(z_t, y_t): w_t g_t (0 off the window), in chunks."""
    gradient = torch.empty_like(logits)
    for part in _position_chunks(logits):
        g = _softmax_gradient_(torch.softmax(logits[:, part], dim=-1), targets[:, part])
        gradient[:, part] = g.mul_(weights[:, part, None])
    return gradient


def _loss_weights(loss: str, grad_norm: torch.Tensor, batch: _Batch) -> torch.Tensor:
    """Weights w_t of each loss's logit gradient w_t g_t: 1/W (`ce`), 1/(W ||g_t||)
    (`ce_unit`, whose definition has exactly that gradient: unit directions over W)."""
    valid = (batch.targets != IGNORE).to(grad_norm.dtype)
    weights = valid / batch.cut_lens[:, None]
    if loss == "ce_unit":
        weights = torch.where(grad_norm > 0, weights / grad_norm, 0.0)
    return weights


def _unit_directions(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """g_t / ||g_t|| at each window position, straight from the definition (0 elsewhere)."""
    g = torch.softmax(logits, dim=-1) - F.one_hot(targets.clamp(min=0), logits.shape[-1])
    g = g * (targets != IGNORE).unsqueeze(-1)
    norm = g.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, g / norm, 0.0)


def _window_mean(values: torch.Tensor, batch: _Batch) -> torch.Tensor:
    """Mean over each sample's window of `[batch, n_keep]` values that are 0 off it."""
    return values.sum(dim=1) / batch.cut_lens


def _score_batch(
    model, arch: Architecture, graph: Graph, samples: list[Sample], losses: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Scores `[n_losses, batch, n_forward, n_backward]` and diagnostics
    `[n_losses, len(DIAGNOSTICS), batch]`: one forward pass, one backward pass per loss.

    Each backward pass starts at the logits with the loss's gradient w_t g_t, built from
    the window statistics (what autograd would give for sum_t w_t CE_t, with g_t's
    target component exact).
    """
    scorer = _EdgeScorer(graph, len(losses))
    batch = _make_batch(samples, _input_device(model))
    grad_logits_norms = []
    with contextlib.ExitStack() as hooks:
        _install_hooks(hooks, model, arch, graph, scorer)
        logits = _window_logits(model, batch)
        window = _position_statistics(logits.detach(), batch.targets)
        for k, loss in enumerate(losses):
            scorer.start(k)
            weights = _loss_weights(loss, window.grad_norm, batch)
            gradient = _logit_gradient(logits.detach(), batch.targets, weights)
            torch.autograd.grad(logits, scorer.sink, gradient, retain_graph=k + 1 < len(losses))
            del gradient
            scorer.finish_pass()
            grad_logits_norms.append(_window_mean(weights * window.grad_norm, batch))
    shared = {
        "window_ce": _window_mean(window.ce, batch),
        "window_entropy": _window_mean(window.entropy, batch),
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


def _known_losses(losses: Iterable[str]) -> tuple[str, ...]:
    """`losses` as a tuple, checked: distinct names from `LOSSES`, at least one."""
    losses = tuple(losses)
    if not losses or len(set(losses)) != len(losses) or not set(losses) <= set(LOSSES):
        raise ValueError(
            f"losses must be distinct names among {', '.join(LOSSES)}; got {list(losses)}"
        )
    return losses


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


def _length_sorted_batches(samples: Sequence[Sample], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length, so right-padding wastes little compute."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].tokens))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _input_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


@contextlib.contextmanager
def _scoring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradient checkpointing (a recomputed forward would fire the hooks
    twice), frozen parameters (only activation gradients are needed) and grad enabled;
    the model's previous state is restored on exit."""
    modes = {module: module.training for module in model.modules()}
    checkpointing = {
        module: module.gradient_checkpointing
        for module in model.modules()
        if isinstance(getattr(module, "gradient_checkpointing", None), bool)
    }
    requires_grad = {param: param.requires_grad for param in model.parameters()}
    try:
        model.eval()
        for module in checkpointing:
            module.gradient_checkpointing = False
        for param in requires_grad:
            param.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training
        for module, enabled in checkpointing.items():
            module.gradient_checkpointing = enabled
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)
