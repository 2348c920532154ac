"""Cost of the weight-space diff of a Llama pair (`circuitry.analysis.weights.diff_models`).

The pair is random and written straight to safetensors (no model is built): Hugging Face
Llama tensor names and shapes, one shard per block plus one for the embedding and one for
the final norm and `lm_head`, with a `model.safetensors.index.json`. Base weights are
normal * 0.02 (norm weights ones); the tuned model touches a fraction `--changed` of the
elements, each multiplied by 1 + `--step` * z (z standard normal) in float32, and is cast
back to `--dtype`, so the untouched elements stay bit-identical and unchanged_exact reads
about 1 - changed, as RL checkpoints do (arXiv 2505.11711). The default step, 3e-2, is
well above half a bfloat16 unit in the last place (2^-9 to 2^-8 relative); at 1e-3 most
touched elements would round back to their base value. Only the first `--layers` blocks
are written (default: 2; toy: all).

`diff_models` runs once, on `--threads` torch threads, in a fresh process. Each tensor is
charged the wall time from the end of the previous tensor's diff to the end of its own
(its reads included); the rest of the call (the tensors outside the blocks, opening the
files, building the table) counts as outside the blocks. The full model's time is
extrapolated as t_outside + L * t_per_block. Peak memory is the rise of the process's
resident-set high-water mark (`ru_maxrss`) during the call. A child's `ru_maxrss` starts
at its parent's, so the pair is written by another child and this script's own process
stays small. `diff_models` closes each shard after reading a tensor from it, so the peak
is set by the largest tensor (the embedding or the head), whatever the depth. The files
were just written, so they are read from the page cache.

    python benchmarks/weight_diff_benchmark.py --shape toy
    python benchmarks/weight_diff_benchmark.py --shape 1b               # first 2 of 16 blocks
    python benchmarks/weight_diff_benchmark.py --shape 7b --layers 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from eap_benchmark import SHAPES as EAP_SHAPES  # noqa: E402 (a sibling script)

SHAPES = {
    **{name: EAP_SHAPES[name] for name in ("toy", "7b")},  # the EAP benchmark's Llama shapes
    "1b": {  # Llama-3.2-1B
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
}
SIDES = ("base", "tuned")
INDEX_FILE = "model.safetensors.index.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="toy")
    parser.add_argument("--layers", type=int, help="blocks written (default: 2; toy: all)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument(
        "--changed", type=float, default=0.2, help="fraction of elements tuning touches"
    )
    parser.add_argument(
        "--step", type=float, default=3e-2, help="relative size of a touched element's update"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--child", choices=("write", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    depth = SHAPES[args.shape]["num_hidden_layers"]
    if args.layers is None:
        args.layers = depth if args.shape == "toy" else 2
    if not 1 <= args.layers <= depth:
        parser.error(f"--layers must be between 1 and {depth}")
    return args


def shard_shapes(shape: dict, layers: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """Shard file -> {tensor name: shape} of the embedding, the first `layers` blocks, and
    the final norm with the head. Linear weights are [out, in]."""
    hidden, inner = shape["hidden_size"], shape["intermediate_size"]
    head_dim = hidden // shape["num_attention_heads"]
    q_rows = shape["num_attention_heads"] * head_dim
    kv_rows = shape["num_key_value_heads"] * head_dim
    shards = {"embed.safetensors": {"model.embed_tokens.weight": (shape["vocab_size"], hidden)}}
    for layer in range(layers):
        block = f"model.layers.{layer}."
        shards[f"layer-{layer:03d}.safetensors"] = {
            block + "self_attn.q_proj.weight": (q_rows, hidden),
            block + "self_attn.k_proj.weight": (kv_rows, hidden),
            block + "self_attn.v_proj.weight": (kv_rows, hidden),
            block + "self_attn.o_proj.weight": (hidden, q_rows),
            block + "mlp.gate_proj.weight": (inner, hidden),
            block + "mlp.up_proj.weight": (inner, hidden),
            block + "mlp.down_proj.weight": (hidden, inner),
            block + "input_layernorm.weight": (hidden,),
            block + "post_attention_layernorm.weight": (hidden,),
        }
    shards["head.safetensors"] = {
        "model.norm.weight": (hidden,),
        "lm_head.weight": (shape["vocab_size"], hidden),
    }
    return shards


def tensor_pair(shape: tuple[int, ...], args: argparse.Namespace, generator):
    """A base tensor (ones for a norm, else normal * 0.02) and its tuned version."""
    import torch

    dtype = getattr(torch, args.dtype)
    if len(shape) == 1:
        base = torch.ones(shape, dtype=dtype)
    else:
        base = torch.randn(shape, generator=generator).mul_(0.02).to(dtype)
    step = torch.randn(shape, generator=generator).mul_(args.step)
    step.mul_(torch.rand(shape, generator=generator) < args.changed)
    return base, step.add_(1).mul_(base.float()).to(dtype)


def write_pair(args: argparse.Namespace) -> None:
    """Child process: the base and tuned shards and indexes under `args.dir`."""
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    shards = shard_shapes(SHAPES[args.shape], args.layers)
    for side in SIDES:
        weight_map = {name: file for file, shapes in shards.items() for name in shapes}
        (args.dir / side).mkdir()
        (args.dir / side / INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))
    for file, shapes in shards.items():
        tensors = {side: {} for side in SIDES}
        for name, shape in shapes.items():
            tensors["base"][name], tensors["tuned"][name] = tensor_pair(shape, args, generator)
        for side in SIDES:
            save_file(tensors[side], args.dir / side / file)


def clocked(tensor_diff, seconds: dict[str, float]):
    """`tensor_diff`, charging each tensor in `seconds` the wall time since the previous
    call returned (or since this wrapper was made)."""
    last = [time.perf_counter()]

    def timed(name, base, tuned):
        row = tensor_diff(name, base, tuned)
        now = time.perf_counter()
        seconds[name], last[0] = now - last[0], now
        return row

    return timed


def measure(args: argparse.Namespace) -> dict:
    """Child process: time and `ru_maxrss` rise of one `diff_models` of the pair."""
    import torch

    from circuitry.analysis import weights
    from circuitry.analysis.weight_table import layer_of

    torch.set_num_threads(args.threads)
    seconds = {}
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    weights.tensor_diff = clocked(weights.tensor_diff, seconds)
    table, notes = weights.diff_models(args.dir / "base", args.dir / "tuned")
    total = time.perf_counter() - start
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    in_blocks = sum(t for name, t in seconds.items() if layer_of(name) is not None)
    return {
        "seconds": total,
        "block_seconds": in_blocks,
        "rss_rise": (peak_after - peak_before) * 1024,
        "read": weights.summarise(table)["model"],
        "notes": notes,
    }


def run_child(mode: str, argv: list[str], root: str) -> str:
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, *argv, "--child", mode, "--dir", root]
    # glibc then returns every large block to the system on free, so RSS tracks live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr}")
    return done.stdout


def report(args: argparse.Namespace, result: dict) -> None:
    shape = SHAPES[args.shape]
    depth = shape["num_hidden_layers"]
    per_block = result["block_seconds"] / args.layers
    outside = result["seconds"] - result["block_seconds"]
    full_minutes = (outside + depth * per_block) / 60
    mb = 1e6
    read = result["read"]
    print(
        f"Llama shape {args.shape}: {depth} layers, hidden {shape['hidden_size']}, "
        f"intermediate {shape['intermediate_size']}, {shape['num_attention_heads']} heads / "
        f"{shape['num_key_value_heads']} kv heads, vocab {shape['vocab_size']}; {args.dtype}; "
        f"{args.changed:.0%} of elements touched by a {args.step:g} relative step"
    )
    print(f"measured: embedding, final norm, lm_head and {args.layers} of {depth} blocks")
    print(f"  diff_models                 {result['seconds']:9.3f} s on {args.threads} thread(s)")
    print(f"  outside the blocks          {outside:9.3f} s")
    print(f"  per block                   {per_block:9.3f} s")
    print(
        f"  full model (extrapolated)   {full_minutes:9.2f} min wall = "
        f"{full_minutes * args.threads:.2f} CPU-minutes"
    )
    print(f"  peak RSS rise               {result['rss_rise'] / mb:9.0f} MB")
    print(
        f"read ({read['numel']:,} elements): unchanged_exact {read['unchanged_exact']:.4f}, "
        f"unchanged_tol {read['unchanged_tol']:.4f}, rel_update_norm "
        f"{read['rel_update_norm']:.2e} (1 - changed = {1 - args.changed:.4f})"
    )
    for note in result["notes"]:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child == "write":
        write_pair(args)
        return
    if args.child == "measure":
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory(prefix="weight-diff-") as root:
        run_child("write", argv, root)
        result = json.loads(run_child("measure", argv, root).splitlines()[-1])
    report(args, result)


if __name__ == "__main__":
    main()
