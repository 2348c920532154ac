"""The device check: what circuitry needs measured on a GPU, prepared to run once, offline.

    python benchmarks/gpu_check.py OUT            # on one GPU: at most --time-limit s (480)
    python benchmarks/gpu_check.py OUT --tiny     # anywhere, CPU included: tiny shapes

Four parts, each in its own process (an out-of-memory error in one leaves the others),
in order; a part starts only while the time left exceeds its estimate, and runs under a
timeout of the time left, so the check ends before its limit:

1. `eap`: EAP with the three default readings at the Llama-7B shape in bf16 (random
   weights) at 2,048 and 8,192 tokens, and at 16,384 where the memory model says it fits
   (with its layers checkpointed if that is what fits), a window of half the tokens:
   seconds and peak memory against the floor (forward + backward to the input), and the
   predicted peak (`circuitry.attribution.memory`) beside the measured one;
2. `generation`: static against continuous batching at that shape, 64 prompts with
   log-normal answer lengths up to 4,096 (`generation_benchmark.py`);
3. `faithfulness`: one sample's faithfulness check at that shape, 2,048 tokens;
4. `workflow`: the workflow end to end on the device (generation, pairing, EAP, metrics,
   report) for one pair on 100 toy-math problems: the shipped toy-sft and its continued
   SFT. A random-weight model answers no problem right, and pairing keeps only problems
   both models answered right, so the toy's real models stand in for a 1B shape.

Writes OUT/gpu_check.json and OUT/gpu_check.md (the workflow's folder is OUT/workflow)
and prints the tables. Needs only
the project's install (no network). `--tiny` runs the same parts with tiny shapes and
lengths (the test suite runs it on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("eap", "generation", "faithfulness", "workflow")
# Seconds each part is expected to take on one GPU (tiny: on a 2-core CPU); a part
# starts only when more time than this is left.
ESTIMATES = {
    "full": {"eap": 150, "generation": 120, "faithfulness": 60, "workflow": 150},
    "tiny": {"eap": 30, "generation": 30, "faithfulness": 30, "workflow": 200},
}
EAP_TOKENS = {"full": (2048, 8192, 16384), "tiny": (128, 256, 512)}
FAITHFULNESS_TOKENS = {"full": 2048, "tiny": 128}
WINDOW = 0.5
REPEATS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU test)")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds in all")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = "tiny" if args.tiny else "full"
    return args


def device_name() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", platform.processor() or platform.machine()


def eap_args(size: str, device: str) -> argparse.Namespace:
    """`eap_benchmark`'s arguments for its model: the 7B shape in bf16, or its toy shape."""
    import eap_benchmark

    shape = "7b" if size == "full" else "toy"
    dtype = "bfloat16" if size == "full" else "float32"
    tokens = ["--tokens", *map(str, EAP_TOKENS[size])]
    return eap_benchmark.parse_args(
        ["--device", device, "--shape", shape, "--dtype", dtype, *tokens]
    )


def timed_peak(step, device: str) -> tuple[float, int]:
    """Best seconds of `REPEATS` runs of `step` (after one warm run) and its peak bytes."""
    import torch
    from eap_memory import _peak_meter

    step()
    start, peak_of = _peak_meter(device)
    best = float("inf")
    for _ in range(REPEATS):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return best, peak_of() - start


def eap_part(size: str, device: str) -> dict:
    """Per token count: floor and EAP seconds and peaks, predicted peak, and how it ran."""
    import eap_benchmark
    import torch

    from circuitry.attribution.memory import (
        device_budget,
        eap_peak_bytes,
        memory_budget,
        model_shape,
    )
    from circuitry.attribution.scorefile import LOSSES

    args = eap_args(size, device)
    model = eap_benchmark.build_model(args)
    shape = model_shape(model)
    total = _device_total(device)
    budget = memory_budget(shape, total, None)
    rows = []
    for tokens in EAP_TOKENS[size]:
        window = max(1, int(WINDOW * tokens))
        plain = eap_peak_bytes(shape, tokens, window, losses=len(LOSSES))
        checkpointed = eap_peak_bytes(shape, tokens, window, losses=len(LOSSES), checkpointing=True)
        how = "plain"
        if budget is not None and plain > budget:
            how = "checkpointed" if checkpointed <= budget else "skipped"
        row = {"tokens": tokens, "window": window, "how": how, "predicted_bytes": plain}
        if how == "checkpointed":
            row["predicted_bytes"] = checkpointed
        try:
            row |= measured_eap(model, tokens, how, device)
        except torch.OutOfMemoryError:
            row["how"] = f"{how}: out of memory"
            torch.cuda.empty_cache()
        rows.append(row)
    return {
        "shape": vars(shape),
        "device_total_bytes": total,
        "budget_bytes": budget,
        "budget_of_80gb": device_budget(80 * 10**9, shape),
        "rows": rows,
    }


def measured_eap(model, tokens: int, how: str, device: str) -> dict:
    """Seconds and peaks of EAP with every default reading, run `how` (plain or
    checkpointed), and of the floor where the window fits plain (the floor keeps every
    layer's activations, so a window that fits only checkpointed has none)."""
    import eap_benchmark

    from circuitry.attribution.architectures import architecture_for
    from circuitry.attribution.hooks import checkpointed_layers

    if how == "skipped":
        return {}
    measured = {}
    if how == "plain":
        step = eap_benchmark.make_step(model, "input-grad", tokens, WINDOW)
        measured["floor_s"], measured["floor_peak_bytes"] = timed_peak(step, device)
    scoring = (
        checkpointed_layers(model, architecture_for(model))
        if how == "checkpointed"
        else contextlib.nullcontext()
    )
    with scoring:
        step = eap_benchmark.make_step(model, "eap+unit", tokens, WINDOW)
        measured["eap_s"], measured["measured_bytes"] = timed_peak(step, device)
    return measured


def _device_total(device: str) -> int | None:
    import torch

    return torch.cuda.get_device_properties(0).total_memory if device == "cuda" else None


def generation_part(size: str, device: str) -> dict:
    """Completion tokens per second of both backends on the same long-tailed answers."""
    import generation_benchmark as bench
    import torch

    argv = ["--device", device, "--prompts", "64"]
    if size == "tiny":
        argv = ["--device", device, "--prompts", "12", "--batch-size", "4", "--median", "8"]
        argv += ["--max-new-tokens", "64"]
    args = bench.parse_args(argv)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = bench.countdown_model(args.shape, args.device, dtype)
    tokenizer = bench.word_tokenizer(bench.SHAPES[args.shape]["vocab_size"])
    lm = bench.LoadedModel(
        model, tokenizer, "random", None, "countdown", torch.device(device), dtype,
        (bench.EOS,), bench.EOS,
    )  # fmt: skip
    problems, lengths = bench.workload(args)
    warmup, _ = bench.workload(argparse.Namespace(**{**vars(args), "prompts": 4, "seed": -1}))
    result = {"prompts": len(problems), "tokens": sum(lengths), "max_length": max(lengths)}
    rows: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in bench.BACKENDS:
            bench.run(lm, backend, warmup, args, Path(tmp) / "warmup", args.batch_size)
            counted = backend == "continuous"
            with bench.counted_rows(rows) if counted else contextlib.nullcontext():
                seconds, produced = bench.run(
                    lm, backend, problems, args, Path(tmp), args.batch_size
                )
            result[backend] = {
                "seconds": seconds,
                "tokens_per_s": sum(lengths) / seconds,
                "lengths_as_drawn": produced == lengths,
            }
    result["continuous"] |= {"peak_rows": max(rows), "mean_rows": sum(rows) / len(rows)}
    return result


def faithfulness_part(size: str, device: str) -> dict:
    import eap_benchmark

    args = eap_args(size, device)
    model = eap_benchmark.build_model(args)
    tokens = FAITHFULNESS_TOKENS[size]
    seconds, peak = timed_peak(
        eap_benchmark.make_step(model, "faithfulness", tokens, WINDOW), device
    )
    return {"tokens": tokens, "seconds": seconds, "peak_bytes": peak}


def workflow_config(work: Path, device: str) -> Path:
    """config/toy.yaml cut to one pair (toy-sft against toy-sft-more) on 100 toy-math
    problems, one alpha, no controls or checks, the models on the GPU where there is one."""
    import yaml

    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["datasets"] = {"toy-math": config["datasets"]["toy-math"]}
    config["datasets"]["toy-math"]["toy"]["n"] = 100
    models = {name: config["models"][name] for name in ("toy-sft", "toy-sft-more")}
    shipped = models["toy-sft"]["train"]["shipped"]
    models["toy-sft"]["train"]["shipped"] = str(ROOT / shipped)
    for spec in models.values():
        spec["gpu"] = device == "cuda"
    config["models"] = models
    pair = {key: v for key, v in config["pairs"]["toy-sft-more"].items() if key != "control"}
    config["pairs"] = {"sft-more": pair}
    config.pop("dynamics", None)
    config["filter"]["num_samples"] = 20
    config["eap"]["alphas"] = [0.3]
    for section in ("calibration", "faithfulness", "survival"):
        config[section]["enabled"] = False
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def workflow_part(out: Path, device: str, timeout: float) -> dict:
    """Snakemake from the prepared config to the report, in OUT/workflow."""
    work = out / "workflow"
    work.mkdir(parents=True, exist_ok=True)
    config = workflow_config(work, device)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(work), "--configfile", str(config), "--cores", "all",
        "--resources", "gpu=1",
    ]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    seconds = time.perf_counter() - began
    report = work / "results" / "report" / "report.html"
    if done.returncode != 0 or not report.exists():
        raise RuntimeError(f"snakemake failed:\n{done.stderr[-3000:]}")
    return {"seconds": seconds, "report_bytes": report.stat().st_size}


def run_part(part: str, args: argparse.Namespace, timeout: float) -> dict:
    """One part in a fresh process (glibc told to return freed memory, so CPU peaks hold)."""
    command = [sys.executable, __file__, str(args.out), "--part", part]
    command += ["--tiny"] if args.tiny else []
    command += ["--time-limit", str(timeout)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    began = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timed out", "seconds": time.perf_counter() - began}
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr[-3000:]}
    return {"status": "ok", **json.loads(done.stdout.splitlines()[-1])}


def child(args: argparse.Namespace) -> dict:
    device, _ = device_name()
    if args.part == "eap":
        return eap_part(args.size, device)
    if args.part == "generation":
        return generation_part(args.size, device)
    if args.part == "faithfulness":
        return faithfulness_part(args.size, device)
    return workflow_part(args.out, device, args.time_limit)


def eap_cells(row: dict) -> list[str]:
    """One row of the EAP table; blank where it did not run, or ran without a floor."""
    mib = 2**20
    cells = [str(row["tokens"]), row["how"]]
    measured = "measured_bytes" in row
    floor = "floor_s" in row
    cells += [
        f"{row['eap_s']:.3f}" if measured else "",
        f"{row['floor_s']:.3f}" if floor else "",
        f"{row['eap_s'] / row['floor_s']:.2f}x" if floor else "",
        f"{row['predicted_bytes'] / mib:.0f}",
        f"{row['measured_bytes'] / mib:.0f}" if measured else "",
        f"{100 * (row['predicted_bytes'] / row['measured_bytes'] - 1):+.1f}%" if measured else "",
        f"{row['floor_peak_bytes'] / mib:.0f}" if floor else "",
    ]
    return cells


def markdown(result: dict) -> str:
    """The check's tables."""
    mib = 2**20
    lines = [
        f"Device check, {result['device']} ({result['kind']}), {result['date']}, "
        f"torch {result['torch']}, {result['size']} shapes, {result['seconds']:.0f} s.",
        "",
        "| part | status |",
        "| --- | --- |",
        *(f"| {part} | {result['parts'][part]['status']} |" for part in PARTS),
    ]
    eap = result["parts"]["eap"]
    if eap["status"] == "ok":
        lines += [
            "",
            "| tokens | run | EAP s | floor s | EAP / floor | predicted MiB | measured MiB "
            "| error | floor MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in eap["rows"]:
            lines.append("| " + " | ".join(eap_cells(row)) + " |")
    generation = result["parts"]["generation"]
    if generation["status"] == "ok":
        static, continuous = (generation[b]["tokens_per_s"] for b in ("static", "continuous"))
        lines += [
            "",
            "| prompts | tokens | static tokens/s | continuous tokens/s | continuous / static "
            "| continuous rows per step: peak, mean |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {generation['prompts']} | {generation['tokens']} | {static:.0f} "
            f"| {continuous:.0f} | {continuous / static:.2f}x "
            f"| {generation['continuous']['peak_rows']}, "
            f"{generation['continuous']['mean_rows']:.1f} |",
        ]
    faithfulness = result["parts"]["faithfulness"]
    if faithfulness["status"] == "ok":
        lines += [
            "",
            f"Faithfulness, one sample of {faithfulness['tokens']} tokens: "
            f"{faithfulness['seconds']:.2f} s, peak {faithfulness['peak_bytes'] / mib:.0f} MiB.",
        ]
    workflow = result["parts"]["workflow"]
    if workflow["status"] == "ok":
        lines += ["", f"Workflow to the report: {workflow['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.part:
        print(json.dumps(child(args)))
        return
    import torch

    began = time.perf_counter()
    kind, name = device_name()
    parts = {}
    for part in PARTS:
        left = args.time_limit - (time.perf_counter() - began)
        if left < ESTIMATES[args.size][part]:
            parts[part] = {"status": f"skipped: {left:.0f} s left"}
            continue
        parts[part] = run_part(part, args, timeout=left - 5)
        print(f"{part}: {parts[part]['status']}", flush=True)
    result = {
        "device": name,
        "kind": kind,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "size": args.size,
        "seconds": time.perf_counter() - began,
        "parts": parts,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "gpu_check.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
