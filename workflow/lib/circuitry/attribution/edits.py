"""Known-answer edits: a model changed in a known way when it is loaded, with no training
and no copy of its weights.

- `temperature` (`factor` s > 0): the final norm's output is multiplied by s, so every
  logit is s times the original (no supported family has an output-head bias; tied
  embeddings are untouched). Greedy answers stay the same (teacher forcing checks it) and
  every node upstream of the final norm is unchanged: the true circuit change is 0.
- `planted` (`node` u, `factor` f > 0): forward node u's output (`circuitry.attribution.graph`:
  `input`, `a{l}`, `m{l}`) is multiplied by f, a real change inside the circuit, first of
  all on the edges leaving u.

`apply_edit` registers forward hooks that stay on the model until their handles are
removed, so generation, teacher forcing and EAP all run the edited model. Hooks run in
the order they were registered, so an edit applied before scoring is what EAP's own
hooks read.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torch.utils.hooks import RemovableHandle

from circuitry.attribution.architectures import architecture_for
from circuitry.attribution.graph import build_graph
from circuitry.attribution.hooks import replacing_hidden_states

EDIT_KINDS = ("temperature", "planted")


def apply_edit(model: nn.Module, edit: Mapping) -> list[RemovableHandle]:
    """Edit `model` in place with forward hooks; remove the returned handles to undo it."""
    arch = architecture_for(model)
    layers = arch.decoder_layers(model)
    factor = float(edit["factor"])
    if edit["kind"] not in EDIT_KINDS or not factor > 0:
        raise ValueError(f"unknown edit {dict(edit)}: kinds {EDIT_KINDS}, factor > 0")
    if edit["kind"] == "temperature":
        final_norm = model.get_submodule(arch.final_norm)
        return [final_norm.register_forward_hook(_scaling_output(factor))]
    node = edit["node"]
    if node not in build_graph(len(layers)).forward_nodes:
        raise ValueError(
            f"planted node {node!r} does not exist in this {type(model).__name__} with "
            f"{len(layers)} layers (forward nodes input, a0, m0, ..., m{len(layers) - 1})"
        )
    if node == "input":
        scale = replacing_hidden_states(lambda hidden: hidden * factor)
        return [layers[0].register_forward_pre_hook(scale, with_kwargs=True)]
    modules = arch.layer_modules(layers[int(node[1:])])
    module = modules.attn_out if node[0] == "a" else modules.mlp
    return [module.register_forward_hook(_scaling_output(factor))]


def _scaling_output(factor: float):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] * factor, *output[1:])
        return output * factor

    return hook
