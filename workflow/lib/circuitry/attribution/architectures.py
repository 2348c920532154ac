"""Adapters that name, for each supported model family, the modules EAP hooks.

EAP needs to know, in every decoder layer, where the residual stream is read (the input
of the pre-attention norm, the q/k/v projections that follow it, the input of the
post-attention norm) and where it is written (the attention output projection, the MLP),
plus the final norm. The families differ only in these names, and in whether q, k and v
come from one fused projection; an `Architecture` records exactly that.

Supported: Llama, Mistral and Qwen2 (separate q/k/v projections, grouped-query attention,
Qwen2 with q/k/v biases), Phi-3 (fused `qkv_proj`) and GPT-2 (fused `c_attn` Conv1D,
learned position embeddings, LayerNorm with biases).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class LayerModules:
    """The hooked modules of one decoder layer.

    Either `projections` (separate q, k, v modules) or `fused` with `fused_slices` (the
    output columns of q, k and v in the fused projection) is set.
    """

    attn_norm: nn.Module
    projections: tuple[nn.Module, nn.Module, nn.Module] | None
    fused: nn.Module | None
    fused_slices: tuple[slice, slice, slice] | None
    attn_out: nn.Module
    mlp_norm: nn.Module
    mlp: nn.Module


@dataclass(frozen=True)
class Architecture:
    """Module paths of one model family: `layers` and `final_norm` from the causal LM, the
    rest from a decoder layer. `qkv` holds three paths (separate projections) or one
    (fused projection, split by `qkv_sizes(layer)` into q, k, v output sizes)."""

    family: str
    model_types: tuple[str, ...]
    layers: str
    final_norm: str
    attn_norm: str
    qkv: tuple[str, ...]
    attn_out: str
    mlp_norm: str
    mlp: str
    qkv_sizes: Callable[[nn.Module], tuple[int, int, int]] | None = None

    def decoder_layers(self, model: nn.Module) -> list[nn.Module]:
        """The decoder layers the forward pass runs (a config may use fewer than stored)."""
        try:
            layers = model.get_submodule(self.layers)
        except AttributeError:
            raise ValueError(
                f"{type(model).__name__} has no module {self.layers!r}: EAP needs the causal "
                f"language model of the {self.family} family (its *ForCausalLM class)"
            ) from None
        return list(layers)[: model.config.num_hidden_layers]

    def layer_modules(self, layer: nn.Module) -> LayerModules:
        modules = [layer.get_submodule(path) for path in self.qkv]
        fused = len(modules) == 1
        return LayerModules(
            attn_norm=layer.get_submodule(self.attn_norm),
            projections=None if fused else tuple(modules),
            fused=modules[0] if fused else None,
            fused_slices=_slices(self.qkv_sizes(layer)) if fused else None,
            attn_out=layer.get_submodule(self.attn_out),
            mlp_norm=layer.get_submodule(self.mlp_norm),
            mlp=layer.get_submodule(self.mlp),
        )


def _slices(sizes: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    q, k, v = sizes
    return (slice(0, q), slice(q, q + k), slice(q + k, q + k + v))


def _phi3_qkv_sizes(layer: nn.Module) -> tuple[int, int, int]:
    attn = layer.self_attn
    kv = attn.num_key_value_heads * attn.head_dim
    return (attn.config.num_attention_heads * attn.head_dim, kv, kv)


def _gpt2_qkv_sizes(layer: nn.Module) -> tuple[int, int, int]:
    return (layer.attn.split_size,) * 3


def _llama_like(family: str) -> Architecture:
    return Architecture(
        family=family,
        model_types=(family,),
        layers="model.layers",
        final_norm="model.norm",
        attn_norm="input_layernorm",
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        attn_out="self_attn.o_proj",
        mlp_norm="post_attention_layernorm",
        mlp="mlp",
    )


ARCHITECTURES = (
    _llama_like("llama"),
    _llama_like("mistral"),
    _llama_like("qwen2"),
    Architecture(
        family="phi3",
        model_types=("phi3",),
        layers="model.layers",
        final_norm="model.norm",
        attn_norm="input_layernorm",
        qkv=("self_attn.qkv_proj",),
        attn_out="self_attn.o_proj",
        mlp_norm="post_attention_layernorm",
        mlp="mlp",
        qkv_sizes=_phi3_qkv_sizes,
    ),
    Architecture(
        family="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        final_norm="transformer.ln_f",
        attn_norm="ln_1",
        qkv=("attn.c_attn",),
        attn_out="attn.c_proj",
        mlp_norm="ln_2",
        mlp="mlp",
        qkv_sizes=_gpt2_qkv_sizes,
    ),
)


def architecture_for(model: nn.Module) -> Architecture:
    """The adapter of `model`'s family; an unsupported model fails naming its class."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    supported = ", ".join(arch.family for arch in ARCHITECTURES)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            _check_supported_variant(model, model_type)
            return arch
    raise ValueError(
        f"EAP does not support {type(model).__name__} (model_type {model_type!r}); "
        f"supported families: {supported}. Add an Architecture in circuitry/architectures.py."
    )


def _check_supported_variant(model: nn.Module, model_type: str) -> None:
    """Refuse configurations whose residual stream the adapter would describe wrongly."""
    if getattr(model.config, "add_cross_attention", False):
        raise ValueError(
            f"EAP does not support {type(model).__name__} with cross-attention "
            f"({model_type} config add_cross_attention=True)"
        )


def project_slice(module: nn.Module, hidden: torch.Tensor, columns: slice) -> torch.Tensor:
    """The output `columns` of a fused projection, computed from `hidden` alone.

    Works for `nn.Linear` (weight [out, in]) and GPT-2's `Conv1D` (weight [in, out]); slicing
    the weight costs no copy and the three slices together cost the fused FLOPs.
    """
    bias = None if module.bias is None else module.bias[columns]
    if isinstance(module, nn.Linear):
        return F.linear(hidden, module.weight[columns], bias)
    if isinstance(module, Conv1D):
        out = hidden @ module.weight[:, columns]
        return out if bias is None else out + bias
    raise TypeError(f"cannot slice a fused q/k/v projection of type {type(module).__name__}")
