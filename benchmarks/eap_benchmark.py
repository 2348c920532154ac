"""Cost of EAP scoring relative to a plain forward + backward of the same model and tokens.

The measurements:

- `train`: forward + `loss.backward()` with parameter gradients (a training step);
- `input-grad`: forward + backward to the input only, parameters frozen (the least any
  gradient method needs);
- `eap`: `circuitry.attribution.eap.score_samples` on one sample under the paper's loss (`ce`);
- `eap+unit`: `score_windows` with both losses (`ce`, `ce_unit`) from one forward pass;
- `eap+unit+crossed`: the same on the sample's own answer and on another answer of the
  same length (crossed text), as one EAP job does per alpha;
- `survival`: one problem of one model in a survival job (`survival.edges` edges drawn,
  each removed outright under each of `survival.losses`, at the schema's defaults);
- `ig-edge`: one edge's per-edge integrated gradient (`faithfulness.ig_steps` points);
- `faithfulness`: one sample's faithfulness check
  (`circuitry.attribution.faithfulness.analyse_sample` at the config schema's defaults:
  50 top + 50 random single-edge ablations and the cumulative curves, batched by
  `faithfulness.batch_size`), its EAP scores precomputed.

All use the same tokens and loss window (logits only at the window). Time is the best of
`--repeats` rounds that run the modes in turn (so a busy machine slows them alike); peak
memory is the extra memory over the loaded model during one cold run in a fresh process
(CUDA: `max_memory_allocated`; CPU: the rise of the process's resident-set high-water
mark). Printed as ratios.

    python benchmarks/eap_benchmark.py                  # toy Llama on CPU
    python benchmarks/eap_benchmark.py --device cuda    # Llama-7B shape, bf16, 512 and 2048 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODES = (
    "train", "input-grad", "eap", "eap+unit", "eap+unit+crossed", "faithfulness", "survival",
    "ig-edge",
)  # fmt: skip
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
SHAPES = {
    "toy": {
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
    },
    "7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="toy on cpu, 7b on cuda by default")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="default: cpu float32, cuda bfloat16"
    )
    parser.add_argument(
        "--tokens", type=int, nargs="+", help="default: cpu 512 2048, cuda 512 2048"
    )
    parser.add_argument("--layers", type=int, help="override the number of layers")
    parser.add_argument("--kv-heads", type=int, help="override num_key_value_heads (GQA)")
    parser.add_argument(
        "--window", type=float, default=0.5, help="fraction of tokens in the loss window"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shape = args.shape or ("7b" if args.device.startswith("cuda") else "toy")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.tokens = args.tokens or [512, 2048]
    return args


def model_config(args: argparse.Namespace):
    from transformers import LlamaConfig

    shape = dict(SHAPES[args.shape])
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    if args.kv_heads:
        shape["num_key_value_heads"] = args.kv_heads
    return LlamaConfig(**shape, max_position_embeddings=max(args.tokens), pad_token_id=0)


def build_model(args: argparse.Namespace):
    """A randomly initialised Llama, created directly on the device in the benchmark dtype."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM._from_config(model_config(args), dtype=getattr(torch, args.dtype))
    return model.eval()


def window_loss(model, input_ids, keep, targets, inputs_embeds=None):
    """Mean cross-entropy on the window, from logits at the window positions only."""
    from torch.nn import functional as F

    feed = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    logits = model(**feed, logits_to_keep=keep, use_cache=False).logits
    return F.cross_entropy(logits.float()[0], targets)


def make_step(model, mode: str, n_tokens: int, window: float):
    """A callable running one measured step of `mode` on `n_tokens` random tokens."""
    import torch

    from circuitry.attribution.eap import score_samples, score_windows
    from circuitry.attribution.samples import Sample
    from circuitry.attribution.scorefile import LOSSES

    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, model.config.vocab_size, (n_tokens,), generator=generator)
    other_answer = torch.randint(3, model.config.vocab_size, (n_tokens,), generator=generator)
    cut_len = max(1, int(window * n_tokens))
    prompt = n_tokens - cut_len
    own = Sample(tokens[:prompt].tolist(), tokens[prompt:].tolist(), cut_len)
    crossed = Sample(tokens[:prompt].tolist(), other_answer[:cut_len].tolist(), cut_len)
    if mode == "eap":
        return lambda: score_samples(model, [own])
    if mode == "eap+unit":
        return lambda: score_windows(model, [own], LOSSES)
    if mode == "eap+unit+crossed":
        return lambda: [score_windows(model, [sample], LOSSES) for sample in (own, crossed)]
    if mode == "faithfulness":
        return faithfulness_step(model, own)
    if mode == "survival":
        return survival_step(model, own)
    if mode == "ig-edge":
        return ig_step(model, own)

    device = model.get_input_embeddings().weight.device
    input_ids = tokens[None].to(device)
    keep = torch.arange(prompt - 1, n_tokens - 1, device=device)
    targets = tokens[prompt:].to(device)
    if mode == "train":

        def train_step():
            model.requires_grad_(True)
            window_loss(model, input_ids, keep, targets).backward()
            model.zero_grad(set_to_none=True)

        return train_step

    def input_grad_step():
        model.requires_grad_(False)
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        torch.autograd.grad(window_loss(model, None, keep, targets, embeds), embeds)

    return input_grad_step


def schema_defaults(section: str = "faithfulness") -> dict:
    """A config section's defaults, from the config schema."""
    import yaml

    properties = yaml.safe_load(SCHEMA.read_text())["properties"][section]["properties"]
    return {key: spec.get("default") for key, spec in properties.items()}


def survival_step(model, sample):
    """One problem of one model in a survival job at the schema's defaults: every edge of
    the edge sample removed outright under each default loss."""
    from circuitry.attribution.ablation import ablated_losses
    from circuitry.attribution.eap import model_graph
    from circuitry.attribution.edge_sample import draw_edges

    defaults = schema_defaults("survival")
    edges = draw_edges(model_graph(model).edge_mask, defaults["edges"], defaults["seed"])
    rows = [[], *([(int(u), int(v))] for u, v in edges)]
    return lambda: [
        ablated_losses(model, sample, rows, loss=loss, batch_size=defaults["batch_size"])
        for loss in defaults["losses"]
    ]


def survival_removals(n_layers: int) -> int:
    """Edge removals of one `survival_step`: the sampled edges under each default loss."""
    from circuitry.attribution.graph import build_graph

    defaults = schema_defaults("survival")
    return min(defaults["edges"], build_graph(n_layers).n_edges) * len(defaults["losses"])


def ig_step(model, sample):
    """One edge's per-edge integrated gradient at the faithfulness defaults (ig_steps
    points, one batch row each)."""
    import numpy as np

    from circuitry.attribution.ablation import integrated_changes
    from circuitry.attribution.eap import model_graph

    defaults = schema_defaults()
    edge = tuple(int(i) for i in np.argwhere(model_graph(model).edge_mask)[-1])
    return lambda: integrated_changes(
        model, sample, [edge], steps=defaults["ig_steps"], batch_size=defaults["batch_size"]
    )


def faithfulness_step(model, sample):
    """One sample's per-edge check and curves at the schema's defaults; its scores are
    computed here, outside the measured step (the workflow reads them from a file)."""
    from circuitry.attribution.ablation import ablated_losses
    from circuitry.attribution.eap import model_graph, score_samples
    from circuitry.attribution.faithfulness import Settings, analyse_sample

    defaults = schema_defaults()
    settings = Settings(**{key: defaults[key] for key in Settings.__dataclass_fields__})
    scores = score_samples(model, [sample])[0]
    mask = model_graph(model).edge_mask

    def ablate(position, rows):
        return ablated_losses(model, sample, rows, batch_size=defaults["batch_size"])

    return lambda: analyse_sample(0, scores, mask, settings, [], ablate)


class PeakMemory:
    """Extra peak memory of a block over what is held when it starts, in bytes."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
            self.start = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _status_kib("VmHWM") * 1024 - self.start


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def set_up(args: argparse.Namespace):
    """The model, after a small warm-up of every mode (kernels and libraries loaded)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    for mode in MODES:
        make_step(model, mode, 16, args.window)()
    return model


def peak_memory(args: argparse.Namespace) -> dict[int, int]:
    """Child process: extra peak bytes of one cold `args.child` step per token count."""
    model = set_up(args)
    peaks = {}
    for n_tokens in args.tokens:
        step = make_step(model, args.child, n_tokens, args.window)
        with PeakMemory(args.device) as memory:
            step()
        peaks[n_tokens] = memory.peak
    return peaks


def best_times(args: argparse.Namespace) -> dict[str, dict[int, float]]:
    """Seconds per step of each mode and token count: best of interleaved rounds."""
    import torch

    model = set_up(args)
    times = {mode: {} for mode in MODES}
    for n_tokens in args.tokens:
        steps = {mode: make_step(model, mode, n_tokens, args.window) for mode in MODES}
        for _ in range(args.repeats):
            for mode, step in steps.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                times[mode][n_tokens] = min(elapsed, times[mode].get(n_tokens, elapsed))
    return times


def measure_memory(mode: str, argv: list[str]) -> dict[int, int]:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", mode]
    # glibc then returns every large block to the system on free, so RSS tracks live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} memory run failed:\n{done.stderr}")
    return {int(k): v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}


def forward_buffer_bytes(args: argparse.Namespace, n_tokens: int) -> int:
    """Size of EAP's float32 buffer of forward-node outputs for one sample."""
    config = model_config(args)
    return (2 * config.num_hidden_layers + 1) * n_tokens * config.hidden_size * 4


def report(args: argparse.Namespace, times: dict, peaks: dict) -> None:
    config = model_config(args)
    print(
        f"Llama shape {args.shape}: {config.num_hidden_layers} layers, "
        f"hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads / {config.num_key_value_heads} kv heads, "
        f"{args.dtype} on {args.device}; loss window {args.window:.0%} of the tokens"
    )
    mib = 2**20
    for n_tokens in args.tokens:
        t = {mode: times[mode][n_tokens] for mode in MODES}
        m = {mode: peaks[mode][n_tokens] for mode in MODES}
        print(f"\n{n_tokens} tokens")
        for mode in MODES:
            print(f"  {mode:<17} {t[mode] * 1e3:9.1f} ms   peak +{m[mode] / mib:9.1f} MiB")
        print(f"  forward buffer {forward_buffer_bytes(args, n_tokens) / mib:.1f} MiB")
        print(
            f"  time   eap/train {t['eap'] / t['train']:.2f}x, "
            f"eap/input-grad {t['eap'] / t['input-grad']:.2f}x, "
            f"eap+unit/eap {t['eap+unit'] / t['eap']:.2f}x, "
            f"eap+unit+crossed/eap {t['eap+unit+crossed'] / t['eap']:.2f}x, "
            f"faithfulness/eap {t['faithfulness'] / t['eap']:.1f}x"
        )
        removals = survival_removals(config.num_hidden_layers)
        print(
            f"  survival: one problem of one model {t['survival']:.2f} s = "
            f"{t['survival'] / t['eap']:.1f}x eap ({removals} removals, "
            f"{t['survival'] / removals * 1e3:.2f} ms each); per-edge IG "
            f"{t['ig-edge'] * 1e3:.1f} ms per edge = {t['ig-edge'] / t['eap']:.2f}x eap"
        )
        print(
            f"  memory eap/train {m['eap'] / m['train']:.2f}x, "
            f"eap/input-grad {m['eap'] / m['input-grad']:.2f}x, "
            f"eap - input-grad = {(m['eap'] - m['input-grad']) / mib:.1f} MiB, "
            f"eap+unit - eap = {(m['eap+unit'] - m['eap']) / mib:.1f} MiB"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps(peak_memory(args)))
        return
    peaks = {mode: measure_memory(mode, argv) for mode in MODES}
    report(args, best_times(args), peaks)


if __name__ == "__main__":
    main()
