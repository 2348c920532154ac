"""Torch hooks where EAP's forward nodes write and backward nodes read the residual stream.

Plain hooks on the Hugging Face modules (named per family by `circuitry.attribution.architectures`):

- Forward nodes: the residual entering the first layer (`input`), each attention output
  projection and each MLP output. `install_hooks` hands each one's output to a callback
  object; `EdgeScorer` copies them once into a float32 buffer [batch, n_forward, T,
  hidden] (float64 for a float64 model, which the exactness tests use).
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
- The edge ablations (`circuitry.attribution.ablation`) use the same hook points with other
  callbacks: q, k or v re-run the norm on their own perturbed copy of its input.
- `checkpointed_layers` lets a window too long for the device's memory keep only each
  layer's input and recompute its activations during the backward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from circuitry.attribution.architectures import Architecture, LayerModules, project_slice
from circuitry.attribution.graph import Graph, attention_index, mlp_column, mlp_index, qkv_columns


class EdgeScorer:
    """Scoring callbacks: buffer forward outputs, contract gradients of the input copies.

    One forward pass serves several backward passes (one per loss): `start(k)` directs the
    next pass into `scores[k]`, and `finish_pass()` ends it; a backward pass outside them
    scores nothing (a loss's own set-up). The logits column keeps its input copy
    (`final_input`) and records the Frobenius norm of its gradient (dL/d(final-norm input))
    per sample and pass.
    """

    def __init__(self, graph: Graph, n_passes: int = 1):
        self.graph = graph
        self.n_passes = n_passes
        self.current: int | None = None
        self.buffer: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None
        self.final_grad_norms: torch.Tensor | None = None
        self.sink: torch.Tensor | None = None
        self.final_input: torch.Tensor | None = None
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
        if column == self.graph.n_backward - 1:
            self.final_input = copy
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
        if self.current is None:
            return
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
        self.current = None


def _norm_backward(norm: nn.Module, residual: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A gradient at a norm's output, taken back to the norm's input.

    The norm is re-run on the kept input (elementwise work) for each of q, k and v, so the
    model stores the norm's activations only once however many readers it has.
    """
    copy = residual.detach().requires_grad_(True)
    with torch.enable_grad():
        (result,) = torch.autograd.grad(norm.forward(copy), copy, grad)
    return result


def install_hooks(stack: contextlib.ExitStack, model, arch: Architecture, graph: Graph, cb) -> None:
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
        layers[0].register_forward_pre_hook(replacing_hidden_states(cb.on_input), with_kwargs=True)
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


def replacing_hidden_states(fn: Callable[[torch.Tensor], torch.Tensor]):
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


@contextlib.contextmanager
def checkpointed_layers(model: nn.Module, arch: Architecture) -> Iterator[None]:
    """Each decoder layer keeps only its input for the backward pass and recomputes its
    activations there (non-reentrant `torch.utils.checkpoint`), one layer at a time.

    The recomputation fires the hooks inside the layer again: forward outputs are copied
    into the buffer again (the same values), and the recomputed input copies get gradient
    hooks that never fire, since gradients flow through the first pass's graph. The
    layer's own pre-hook (where EAP's graph starts) runs outside `forward` and is not
    repeated. Costs one more forward pass of every layer.
    """
    layers = arch.decoder_layers(model)
    own = [layer.__dict__.get("forward") for layer in layers]
    for layer in layers:
        layer.forward = _checkpointed(layer.forward)
    try:
        yield
    finally:
        for layer, forward in zip(layers, own, strict=True):
            del layer.forward
            if forward is not None:
                layer.forward = forward


def _checkpointed(forward: Callable) -> Callable:
    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def input_device(model: nn.Module) -> torch.device:
    """Where the model reads its input ids."""
    return model.get_input_embeddings().weight.device


@contextlib.contextmanager
def scoring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradient checkpointing of the model's own (it would recompute a layer
    with its pre-hooks; `checkpointed_layers` is the one that works with EAP's), frozen
    parameters (only activation gradients are needed) and grad enabled;
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
