"""How much memory EAP scoring needs, from the model's shape, the tokens and the readings,
so a job can be planned, batched to a budget and refused before its model loads.

`eap_peak_bytes` is the peak of one batch over the loaded weights, in bytes. Per token
(T: the batch's padded length; b: the model dtype's bytes; n = max(b, 4); L layers,
hidden h, intermediate m, kv width k, heads a):

- `buffer`: EAP's copies of the forward nodes' outputs, (2L + 1) h n;
- `saved`: what autograd keeps for a backward to the input with frozen weights, counted
  from the decoder layer's operations (`torch.autograd.graph.saved_tensors_hooks` shows
  them): the two RMSNorm inputs in float32 (2 h n), the MLP's gate, activation and up
  (3 m b), the rotated q, the attention output, k and v (2 h b + 2 k b) and the attention's
  log-sum-exp (4 a) in each layer; the final norm's input (h n) once;
- the logits at the W window positions (W V 4, float32) and, during a backward pass, their
  gradient (W V 4); at the end of the forward pass, the window statistics' two float32
  chunks (`STATISTICS_CHUNK`);
- the backward pass's working set, the largest of: the last MLP's (3 m b on top of its
  saved activations), or the last attention's (`ATTENTION_WORKING` h bytes, calibrated,
  with the last MLP's activations already freed); more than one loss keeps
  `EXTRA_LOSS` h n more between the passes (calibrated).

The peak is the largest of three moments: the end of the forward pass (statistics), the
backward through the last MLP, and through the last attention. With
`checkpointing=True` (`circuitry.attribution.hooks.checkpointed_layers`) the layers keep
only their inputs (L h b) and one layer's activations are recomputed at a time.

Validated on CPU against the measured rise of the resident set (tests/test_memory.py): the
calibrated terms come from fp32 and bf16 Llamas of 2-4 layers, hidden 256-512, 512-4,096
tokens, within 9% of every measured peak; held-out shapes stay within 15%. On a GPU the
model is a prediction: `benchmarks/gpu_check.py` prints it beside the measured peak.
A batch of samples costs its padded length times the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from circuitry.attribution.samples import Sample, condition_samples
from circuitry.models.sources import model_config

GIB = 1 << 30
# Logit elements per chunk of the window statistics (`circuitry.attribution.window_loss`):
# two float32 chunks (32 MiB) beside the logits, whatever the vocabulary and window.
STATISTICS_CHUNK = 1 << 22
DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
# Calibrated on CPU (see the module docstring): bytes per token and hidden unit of the
# last attention's backward (norm re-run, q/k/v gradients, their float32 stack), by dtype
# bytes; and of a second loss's retained state, in units of h n.
ATTENTION_WORKING = {8: 0, 4: 0, 2: 50}
EXTRA_LOSS = 4
# What a GPU job keeps back from the device's memory: the CUDA context and the caching
# allocator's fragmentation.
DEVICE_RESERVE_BYTES = GIB
DEVICE_USABLE_FRACTION = 0.92


@dataclass(frozen=True)
class ModelShape:
    """What EAP's memory depends on: a decoder's sizes and the dtype it runs in."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    dtype_bytes: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config: Mapping, dtype: str) -> ModelShape:
        """The shape of a Hugging Face `config.json` (as a dict; GPT-2's names too), run in
        `dtype`. A family without a gated MLP is counted as if it had one (an overestimate)."""
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
        text = config.get("text_config") or config

        def field(*names):
            found = next((text[name] for name in names if text.get(name) is not None), None)
            if found is None:
                raise ValueError(f"model config has none of {', '.join(names)}")
            return found

        hidden = field("hidden_size", "n_embd", "d_model")
        heads = field("num_attention_heads", "n_head")
        return cls(
            layers=field("num_hidden_layers", "n_layer"),
            hidden=hidden,
            intermediate=text.get("intermediate_size") or text.get("n_inner") or 4 * hidden,
            heads=heads,
            kv_heads=text.get("num_key_value_heads") or heads,
            vocab=field("vocab_size"),
            dtype_bytes=DTYPE_BYTES[dtype],
            tied_embeddings=bool(text.get("tie_word_embeddings", False)),
        )

    @property
    def kv_width(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    @property
    def parameters(self) -> int:
        """Weights of a Llama-style decoder: embeddings, attention, gated MLP, norms, head."""
        h, m = self.hidden, self.intermediate
        layer = 2 * h * h + 2 * h * self.kv_width + 3 * h * m + 2 * h
        head = 0 if self.tied_embeddings else self.vocab * h
        return self.vocab * h + self.layers * layer + h + head

    @property
    def weights_bytes(self) -> int:
        return self.parameters * self.dtype_bytes


def eap_peak_bytes(
    shape: ModelShape,
    tokens: int,
    window: int,
    *,
    losses: int = 1,
    batch: int = 1,
    checkpointing: bool = False,
) -> int:
    """Peak bytes over the loaded weights of scoring `batch` samples padded to `tokens`
    tokens, with `window` loss positions, under `losses` readings (see the module
    docstring for each term)."""
    b = shape.dtype_bytes
    n = max(b, 4)
    h, m = shape.hidden, shape.intermediate
    layer = 2 * h * n + 3 * m * b + 2 * h * b + 2 * shape.kv_width * b + 4 * shape.heads
    rope = 2 * (h // shape.heads) * b
    kept = shape.layers * h * b + layer if checkpointing else shape.layers * layer
    held = tokens * ((2 * shape.layers + 1) * h * n + kept + h * n + rope)
    logits = window * shape.vocab * 4
    extra = EXTRA_LOSS * tokens * h * n if losses > 1 else 0
    end_of_forward = held + logits + 2 * min(window * shape.vocab, STATISTICS_CHUNK) * 4
    last_mlp = held + 2 * logits + tokens * 3 * m * b + extra
    last_attention = (
        held - tokens * 3 * m * b + 2 * logits + tokens * h * ATTENTION_WORKING[b] + extra
    )
    return batch * max(end_of_forward, last_mlp, last_attention)


def sample_peak_bytes(
    shape: ModelShape, sample: Sample, losses: int, checkpointing: bool = False
) -> int:
    """`eap_peak_bytes` of one sample on its own."""
    return eap_peak_bytes(
        shape, len(sample.tokens), sample.cut_len, losses=losses, checkpointing=checkpointing
    )


def batch_peak_bytes(
    shape: ModelShape, samples: Sequence[Sample], losses: int, checkpointing: bool = False
) -> int:
    """`eap_peak_bytes` of samples scored together: right-padded to the longest, with
    logits at the union of their windows' positions."""
    tokens = max(len(s.tokens) for s in samples)
    window = len({p for s in samples for p in s.loss_positions})
    return eap_peak_bytes(
        shape, tokens, window, losses=losses, batch=len(samples), checkpointing=checkpointing
    )


def device_budget(total_bytes: int, shape: ModelShape) -> int:
    """Bytes EAP may use on a device of `total_bytes` holding the model's weights."""
    return int(total_bytes * DEVICE_USABLE_FRACTION) - DEVICE_RESERVE_BYTES - shape.weights_bytes


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def model_shape(model) -> ModelShape:
    """The shape of a loaded Hugging Face model, in the dtype it holds."""
    return ModelShape.from_config(model.config.to_dict(), str(model.dtype).removeprefix("torch."))


def memory_budget(
    shape: ModelShape, device_total_bytes: int | None, memory_gib: float | None
) -> int | None:
    """Bytes EAP may use beside the weights on a device of `memory_gib` (the config's
    `eap.memory_gib`) or else `device_total_bytes` (a GPU's); None (no limit) on CPU
    without a setting."""
    total = memory_gib * GIB if memory_gib else device_total_bytes
    return None if total is None else device_budget(int(total), shape)


def planned_device_mb(shape: ModelShape, samples: Sequence[Sample], n_losses: int) -> int:
    """Device memory (MB) to ask for a job scoring `samples` with a model of `shape`: the
    largest sample's peak scored alone and unchecked (the job batches further within
    what it gets), the weights and the reserve (the inverse of `device_budget`)."""
    peak = max((sample_peak_bytes(shape, s, n_losses) for s in samples), default=0)
    needed = peak + DEVICE_RESERVE_BYTES + shape.weights_bytes
    return math.ceil(needed / DEVICE_USABLE_FRACTION / 1e6)


def planned_job_device_mb(
    specs: Mapping[str, dict],
    pair_rows: Mapping[str, Sequence[dict]],
    summaries: Mapping[str, Mapping],
    conditions: Iterable[tuple[str, str, str]],
    n_losses: int,
) -> int:
    """`planned_device_mb` of a job scoring the (dataset, alpha, text) `conditions` of each
    role in `specs` (role -> `models` entry, run in its `dtype`), one model after the
    other: the larger of the roles'. Reads each model's `config.json`, not its weights."""
    conditions = list(conditions)
    needs = []
    for role, spec in specs.items():
        shape = ModelShape.from_config(model_config(spec), spec["dtype"])
        by_condition = condition_samples(role, pair_rows, summaries, conditions)
        samples = [sample for _, listed in by_condition.values() for sample in listed]
        needs.append(planned_device_mb(shape, samples, n_losses))
    return max(needs, default=0)
