"""EAP's peak memory, predicted (`circuitry.attribution.memory`) against measured.

Each case scores one random-token sample with a random-initialised Llama of the given
shape in a fresh process: on CPU the peak is the rise of the resident set's high-water
mark (glibc told to return freed blocks, so the resident set tracks live memory), on CUDA
`max_memory_allocated`; both over what the loaded model holds. With `--checkpointing` the
layers are checkpointed (`circuitry.attribution.hooks.checkpointed_layers`), and the time
is compared with the plain run's.

    python benchmarks/eap_memory.py                  # the held-out CPU cases of the tests
    python benchmarks/eap_memory.py --case 2,256,688,8,4,1000,2048,1024 --dtype bfloat16

A case is `layers,hidden,intermediate,heads,kv_heads,vocab,tokens,window`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "workflow" / "lib"
CASES = (  # held out: none of these shapes calibrated the model
    ("3,384,1024,6,2,3000,1536,512", "float32", "ce,ce_unit,target_unit"),
    ("2,320,864,5,5,2000,3072,1536", "float32", "ce"),
    ("3,256,768,4,1,1500,1024,768", "bfloat16", "ce,ce_unit,target_unit"),
    ("4,256,688,8,4,1000,2048,1024", "float32", "ce,ce_unit,target_unit"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", help="layers,hidden,intermediate,heads,kv_heads,vocab,tokens,window"
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--losses", default="ce,ce_unit,target_unit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure(case: str, dtype: str, losses: str, device: str, checkpointing: bool) -> dict:
    """Run one case in a fresh process; its predicted and measured peak, and seconds."""
    command = [sys.executable, __file__, "--child", "--case", case, "--dtype", dtype]
    command += ["--losses", losses, "--device", device]
    command += ["--checkpointing"] if checkpointing else []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(LIB))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from circuitry.attribution.architectures import architecture_for
    from circuitry.attribution.eap import score_windows
    from circuitry.attribution.hooks import checkpointed_layers
    from circuitry.attribution.memory import eap_peak_bytes, model_shape
    from circuitry.attribution.samples import Sample

    layers, hidden, inter, heads, kv, vocab, tokens, window = map(int, args.case.split(","))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
        max_position_embeddings=tokens, pad_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).to(args.device).eval()
    ids = torch.randint(1, vocab, (tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    sample = Sample(ids[: tokens - window], ids[tokens - window :], window)
    losses = args.losses.split(",")
    warm = Sample(ids[:8], ids[8:16], 4)
    score_windows(model, [warm], losses)
    checkpointing = (
        checkpointed_layers(model, architecture_for(model))
        if args.checkpointing
        else contextlib.nullcontext()
    )
    with checkpointing:
        start, peak_of = _peak_meter(args.device)
        began = time.perf_counter()
        score_windows(model, [sample], losses)
        seconds = time.perf_counter() - began
        peak = peak_of() - start
    predicted = eap_peak_bytes(
        model_shape(model), tokens, window, losses=len(losses), checkpointing=args.checkpointing
    )
    return {"measured": peak, "predicted": predicted, "seconds": seconds}


def _peak_meter(device: str):
    """The bytes held now, and a function returning the peak since."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    return _status_bytes("VmRSS"), lambda: _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    cases = [(args.case, args.dtype, args.losses)] if args.case else CASES
    print(
        "case (L,h,m,heads,kv,V,T,W) | dtype | losses | predicted MiB | measured MiB | error"
        + (" | checkpointed / plain time" if args.checkpointing else "")
    )
    for case, dtype, losses in cases:
        row = measure(case, dtype, losses, args.device, args.checkpointing)
        error = row["predicted"] / row["measured"] - 1
        line = (
            f"{case} | {dtype} | {losses} | {row['predicted'] / 2**20:.1f} | "
            f"{row['measured'] / 2**20:.1f} | {100 * error:+.1f}%"
        )
        if args.checkpointing:
            plain = measure(case, dtype, losses, args.device, checkpointing=False)
            line += f" | {row['seconds'] / plain['seconds']:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
