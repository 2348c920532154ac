"""Generation throughput of the `static` and `continuous` backends on long-tailed answers.

Chain-of-thought answer lengths spread from tens to thousands of tokens. A static batch
runs until its longest answer ends; continuous batching retires each row when it ends.
This benchmark gives both backends the same prompts and the same answer lengths, through
`circuitry.generation.resumable.generate_rows` (the `generate` rule's code), and prints completion
tokens per second and their ratio, at equal concurrency: on CPU the continuous backend
runs at most `--batch-size` rows per step, as the `generate` rule does there; the rows it
actually ran per step (peak and mean, counted at transformers' scheduler) are printed,
and static runs again at that peak where it differs from `--batch-size`. Each figure is
the median of `--rounds` interleaved rounds (the backends take turns, so a busy machine
slows both alike), with its range.

The model is a random-initialised Llama (toy shape on CPU, Llama-7B shape in bf16 on
CUDA: the real model's compute, no download) whose greedy answer counts down: each
token's embedding is a large multiple of the output-head row of the token one below it,
so after token k the argmax is k - 1, and a prompt ending in token L is answered with
L - 1, ..., 1 and then EOS (token 0). Answer lengths are drawn from a log-normal
distribution (`--median`, `--sigma`, capped at `--max-new-tokens`) and each prompt ends
in its length; every answer is checked to have exactly its drawn length.

    python benchmarks/generation_benchmark.py                 # toy Llama, CPU, float32
    python benchmarks/generation_benchmark.py --device cuda   # Llama-7B shape, bf16
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.generation.continuous_batching import scheduler as cb_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from eap_benchmark import SHAPES as EAP_SHAPES  # noqa: E402  (this script's folder)

from circuitry.data.prompts import PromptTemplate  # noqa: E402
from circuitry.generation.resumable import generate_rows  # noqa: E402
from circuitry.models.loading import LoadedModel

BACKENDS = ("static", "continuous")
EOS = 0
# Embedding scale of the countdown direction: far above what random layers add to the
# residual stream, so the final norm sees (almost) only that direction.
COUNTDOWN_SCALE = 1e4
SHAPES = {
    "toy": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 4096,
    },
    "7b": EAP_SHAPES["7b"],
}
TEMPLATE = PromptTemplate("raw", user="{question}", system=None, stop=())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="toy on cpu, 7b on cuda")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--median", type=int, help="median answer length (cpu 64, cuda 512)")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of lengths")
    parser.add_argument("--max-new-tokens", type=int, help="length cap (cpu 1024, cuda 4096)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.shape = args.shape or ("7b" if cuda else "toy")
    args.median = args.median or (512 if cuda else 64)
    args.max_new_tokens = args.max_new_tokens or (4096 if cuda else 1024)
    if args.max_new_tokens >= SHAPES[args.shape]["vocab_size"]:
        parser.error("--max-new-tokens must stay below the vocabulary size (the countdown)")
    return args


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Token i is the word `t{i}`: prompts are written as words, answers decode to words."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="t0", pad_token="t0")


@torch.no_grad()
def countdown_model(shape: str, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    """A random Llama whose greedy next token after token k is k - 1 (see the docstring)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        **SHAPES[shape], max_position_embeddings=8192, eos_token_id=EOS, pad_token_id=EOS
    )
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    head = model.lm_head.weight.float()
    direction = head / head.norm(dim=-1, keepdim=True)
    model.model.embed_tokens.weight[1:] = (COUNTDOWN_SCALE * direction[:-1]).to(dtype)
    return model


def workload(args: argparse.Namespace) -> tuple[list[dict], list[int]]:
    """Problems whose prompts (16 to 64 tokens) end in their answer's length, and the lengths."""
    rng = random.Random(args.seed)
    lengths = [
        min(args.max_new_tokens, max(1, round(rng.lognormvariate(0, args.sigma) * args.median)))
        for _ in range(args.prompts)
    ]
    vocab = SHAPES[args.shape]["vocab_size"]
    problems = []
    for idx, length in enumerate(lengths):
        words = [f"t{rng.randrange(1, vocab)}" for _ in range(rng.randint(15, 63))]
        problems.append({"idx": idx, "question": " ".join([*words, f"t{length + 1}"])})
    return problems, lengths


def run(
    lm: LoadedModel, backend: str, problems: list[dict], args, workdir: Path, batch_size: int
) -> tuple:
    """Seconds and completion-token counts of one backend over all problems."""
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rows = generate_rows(
        lm,
        TEMPLATE,
        problems,
        max_new_tokens=args.max_new_tokens,
        batch_size=batch_size,
        partial_path=workdir / f"{backend}-{batch_size}.partial",
        backend=backend,
        progress=False,
    )
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, [len(row["completion_token_ids"]) for row in rows]


@contextlib.contextmanager
def counted_rows(counts: list[int]):
    """Append the number of rows of every step transformers' scheduler plans to `counts`."""
    classes = [cb_scheduler.FIFOScheduler, cb_scheduler.PrefillFirstScheduler]
    originals = {cls: cls.schedule_batch for cls in classes}

    def counting(original):
        def schedule_batch(self, *args, **kwargs):
            planned = original(self, *args, **kwargs)
            if planned[0]:
                counts.append(len(planned[0]))
            return planned

        return schedule_batch

    for cls, original in originals.items():
        cls.schedule_batch = counting(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.schedule_batch = original


def static_busy_share(lengths: list[int], problems: list[dict], batch_size: int) -> float:
    """The share of static batch slots that hold a running row (longest prompts first, as
    `plan_batches` orders them)."""
    order = sorted(range(len(problems)), key=lambda i: (-len(problems[i]["question"].split()), i))
    slots = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] + 1 for i in order[start : start + batch_size]]
        slots += len(batch) * max(batch)
    return sum(length + 1 for length in lengths) / slots


def spread(values: list[float], digits: int = 0) -> str:
    """Median and range of interleaved rounds."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = countdown_model(args.shape, args.device, dtype)
    tokenizer = word_tokenizer(SHAPES[args.shape]["vocab_size"])
    lm = LoadedModel(model, tokenizer, "random", None, "countdown", device, dtype, (EOS,), EOS)
    problems, lengths = workload(args)
    warmup, _ = workload(argparse.Namespace(**{**vars(args), "prompts": 4, "seed": -1}))
    rows: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in BACKENDS:
            run(lm, backend, warmup, args, Path(tmp) / "warmup", args.batch_size)
        with counted_rows(rows):
            run(lm, "continuous", problems, args, Path(tmp) / "count", args.batch_size)
        peak = max(rows)
        runs = {("static", args.batch_size), ("continuous", args.batch_size), ("static", peak)}
        seconds: dict[tuple, list[float]] = {key: [] for key in sorted(runs)}
        for round_ in range(args.rounds):
            for backend, batch_size in seconds:
                folder = Path(tmp) / f"round{round_}"
                took, produced = run(lm, backend, problems, args, folder, batch_size)
                if produced != lengths:
                    sys.exit(f"{backend}: answers do not have their drawn lengths")
                seconds[backend, batch_size].append(took)
    tokens = sum(lengths)
    dtype_name = str(dtype).removeprefix("torch.")
    median = sorted(lengths)[len(lengths) // 2]
    busy = static_busy_share(lengths, problems, args.batch_size)
    print(
        f"{args.device} {args.shape} {dtype_name}: {args.prompts} prompts, batch size "
        f"{args.batch_size}, answer lengths median {median}, mean {tokens / len(lengths):.0f}, "
        f"max {max(lengths)}; static batches busy {busy:.0%} of their slots; continuous ran "
        f"{peak} rows per step at most, {statistics.mean(rows):.1f} on average "
        f"({args.rounds} interleaved rounds: median (range))"
    )
    static = [tokens / t for t in seconds["static", args.batch_size]]
    continuous = [tokens / t for t in seconds["continuous", args.batch_size]]
    at_peak = [tokens / t for t in seconds["static", peak]]
    print("| static tokens/s | continuous tokens/s | continuous / static | static at the peak |")
    print("| --- | --- | --- | --- |")
    ratios = [c / s for c, s in zip(continuous, static, strict=True)]
    print(
        f"| {spread(static)} | {spread(continuous)} | {spread(ratios, 2)}x "
        f"| {spread(at_peak)} ({peak} rows) |"
    )


if __name__ == "__main__":
    main()
