"""How often the project's answer grader agrees with the paper's, on real benchmark rows.

The two graders need different environments (the paper's pins antlr4 4.11 for its
latex2sympy, math-verify another), so this runs in three steps:

    cases    (project env)  fixture rows -> cases (completion, gold, known truth) as JSONL
    paper    (paper env)    the cases graded by the paper's `evaluation/` code -> JSONL
    compare  (project env)  the same cases graded by `circuitry.data.grading.grade`; prints tables

Cases per row: `own`, the row's worked solution (GSM8K, MATH-500) or, for College Math
(which has none), "The final answer is $\\boxed{gold}$." (correct); `other`, the gold of
the next row that states another value (another last side of `=`, spaces and `$` aside),
boxed the same way (wrong); `rewrite:*`, the gold written another equivalent way, where
it applies (correct): decimal <-> fraction, thousands separators, `\\$`, `x = `.

The paper's side follows its `math_eval.py` + `evaluate.py`: the gold is
`parse_ground_truth` of the row, parsed again from (`gt_cot`, `gt`) as `evaluate` does; the
prediction is `run_execute` (`extract_answer`, then `strip_string`); the verdict is
`math_equal(pred, gold)` in a worker process, a comparison running over 3 s counting as
wrong. Its multiple-choice clean-up is left out: no gold of these datasets is a letter.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"

# dataset -> (fixture file, project normaliser, the paper's data name)
DATASETS = {
    "gsm8k": ("gsm8k_test.jsonl", "gsm8k", "gsm8k"),
    "math500": ("math500_test.jsonl", "math", "math500"),
    "college_math": ("college_math_test.jsonl", "college_math", "college_math"),
}
PAPER_PROMPT_TYPE = "qwen25-math-cot"  # run_execute: extract_answer for any non-program prompt
PAPER_TIMEOUT_S = 3  # evaluate.py: ProcessPool.map(math_equal_process, ..., timeout=3)
SEED = 0

_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}|(-?\d+)/(\d+)")
_DECIMAL = re.compile(r"-?\d*\.\d+")
_INTEGER = re.compile(r"-?\d{4,}")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_NUMERIC = re.compile(r"[-+*/^.\d\s{}()]+")
_MONEY = re.compile(r"\\\$|\bdollars?\b", re.IGNORECASE)


# ---- cases (project env) -------------------------------------------------------------


def boxed_completion(answer: str) -> str:
    """A minimal completion stating `answer` the way the paper's prompts ask for."""
    return f"The final answer is $\\boxed{{{answer}}}$."


def _terminating_decimal(value: Fraction) -> str | None:
    """`3/8` -> `0.375`; None for a fraction without a short finite decimal expansion."""
    for digits in range(7):
        scaled = value * 10**digits
        if scaled.denominator == 1:
            return f"{Decimal(scaled.numerator).scaleb(-digits):f}"
    return None


def _as_fraction(value: Fraction) -> str:
    """`-0.25` as `-\\frac{1}{4}`."""
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def rewrite_decimal(gold: str, question: str, dataset: str) -> str | None:
    """A fraction with a finite decimal expansion as that decimal, a decimal as a fraction."""
    match = _FRACTION.fullmatch(gold)
    if match:
        sign, num, den = match.group(1) or "", match.group(2), match.group(3)
        if num is None:
            num, den = match.group(4), match.group(5)
        if int(den) == 0:
            return None
        return _terminating_decimal(Fraction(int(sign + num), int(den)))
    if _DECIMAL.fullmatch(gold):
        return _as_fraction(Fraction(gold))
    return None


def rewrite_thousands(gold: str, question: str, dataset: str) -> str | None:
    """`12000` -> `12,000`."""
    return f"{int(gold):,}" if _INTEGER.fullmatch(gold) else None


def rewrite_currency(gold: str, question: str, dataset: str) -> str | None:
    """`18` -> `\\$18` for a question about money (GSM8K's `$` is never math)."""
    about_money = _MONEY.search(question) or (dataset == "gsm8k" and "$" in question)
    return f"\\${gold}" if about_money and _PLAIN_NUMBER.fullmatch(gold) else None


def rewrite_assignment(gold: str, question: str, dataset: str) -> str | None:
    """`\\frac{3}{2}` -> `x = \\frac{3}{2}`, for a gold that is one numeric expression."""
    return f"x = {gold}" if _NUMERIC.fullmatch(_LATEX_COMMAND.sub("", gold)) else None


REWRITES = {
    "decimal": rewrite_decimal,
    "thousands": rewrite_thousands,
    "currency": rewrite_currency,
    "assignment": rewrite_assignment,
}


def own_completion(row: dict, gold: str) -> str:
    """The row's worked solution, or a boxed gold where the dataset has none."""
    return row["solution"] if row["solution"] else boxed_completion(gold)


def _last_side(answer: str) -> str:
    """`$x = 5$` -> `5`: an answer's last side, without spaces and `$`, to tell golds apart."""
    return re.sub(r"\s|\$", "", answer).rsplit("=", 1)[-1]


def other_gold(rows: list[dict], position: int) -> str:
    """The gold of the next row (cyclically) whose gold states another value than this row's."""
    gold = _last_side(rows[position]["answer"])
    for step in range(1, len(rows)):
        candidate = rows[(position + step) % len(rows)]["answer"]
        if _last_side(candidate) != gold:
            return candidate
    raise ValueError("every row has the same gold")


def load_rows(fixtures: Path, dataset: str) -> tuple[list[dict], list[dict]]:
    """The raw rows of a dataset and the same rows normalised as the workflow does."""
    from circuitry.data.benchmarks import normalise_rows

    filename, fmt, _ = DATASETS[dataset]
    raw = list(read_jsonl(fixtures / filename))
    rows, counts = normalise_rows(raw, fmt)
    if counts["n_kept"] != len(raw):
        raise ValueError(f"{dataset}: normalising dropped rows: {counts['dropped']}")
    return raw, rows


def dataset_cases(fixtures: Path, dataset: str, sample: int) -> list[dict]:
    """The cases of one dataset, on `sample` rows drawn with `SEED` (all if it has fewer)."""
    raw, rows = load_rows(fixtures, dataset)
    positions = range(len(rows))
    if sample < len(rows):
        positions = sorted(random.Random(SEED).sample(positions, sample))
    cases = []
    for position in positions:
        row, gold = rows[position], rows[position]["answer"]
        base = {"dataset": dataset, "paper_data": DATASETS[dataset][2], "idx": row["idx"]}
        base |= {"row": raw[position], "gold": gold}
        cases.append(base | {"kind": "own", "truth": True, "completion": own_completion(row, gold)})
        wrong = boxed_completion(other_gold(rows, position))
        cases.append(base | {"kind": "other", "truth": False, "completion": wrong})
        for name, rewrite in REWRITES.items():
            answer = rewrite(gold, row["question"], dataset)
            if answer is not None:
                completion = boxed_completion(answer)
                cases.append(
                    base | {"kind": f"rewrite:{name}", "truth": True, "completion": completion}
                )
    return cases


def write_cases(args: argparse.Namespace) -> None:
    cases = [
        case
        for dataset in args.datasets
        for case in dataset_cases(args.fixtures, dataset, args.sample)
    ]
    write_jsonl(args.out, cases)
    print(f"{len(cases)} cases -> {args.out}")


# ---- paper (paper env: stdlib + the paper's evaluation/ modules) ---------------------


def import_paper_grader(evaluation: Path):
    """The paper's `parser` and `grader` modules, imported from its `evaluation/` folder."""
    sys.path.insert(0, str(evaluation.resolve()))
    import grader
    import parser

    return parser, grader


def paper_gold(parser, row: dict, data_name: str) -> str:
    """The gold as `evaluate.py` compares with: parse_ground_truth of the row, then again."""
    gt_cot, gt = parser.parse_ground_truth(row, data_name)
    return parser.parse_ground_truth({"gt_cot": gt_cot, "gt": gt}, data_name)[1]


class TimedMathEqual:
    """The paper's `math_equal` in a worker process that is replaced when a call overruns."""

    def __init__(self, grader, timeout_s: float):
        self.grader, self.timeout_s = grader, timeout_s
        self.pool = self._new_pool()

    def _new_pool(self):
        return multiprocessing.get_context("fork").Pool(1)

    def __call__(self, pred: str, gold: str) -> tuple[bool, bool]:
        """(verdict, whether it timed out)."""
        pending = self.pool.apply_async(self.grader.math_equal, (pred, gold))
        try:
            return bool(pending.get(self.timeout_s)), False
        except multiprocessing.TimeoutError:
            self.pool.terminate()
            self.pool = self._new_pool()
            return False, True

    def close(self) -> None:
        self.pool.terminate()


def paper_verdict(parser, math_equal: TimedMathEqual, case: dict) -> dict:
    """The paper's extracted answer, gold and verdict for one case."""
    data_name = case["paper_data"]
    gold = paper_gold(parser, case["row"], data_name)
    pred, _ = parser.run_execute(None, case["completion"], PAPER_PROMPT_TYPE, data_name)
    correct, timed_out = math_equal(pred, gold)
    return {"paper_pred": pred, "paper_gold": gold, "paper": correct, "paper_timeout": timed_out}


def write_paper_verdicts(args: argparse.Namespace) -> None:
    parser, grader = import_paper_grader(args.evaluation)
    warnings.simplefilter("ignore")  # sympy's deprecation warnings, once per comparison
    math_equal = TimedMathEqual(grader, PAPER_TIMEOUT_S)
    start = time.monotonic()
    try:
        graded = [case | paper_verdict(parser, math_equal, case) for case in read_jsonl(args.cases)]
    finally:
        math_equal.close()
    write_jsonl(args.out, graded)
    print(f"{len(graded)} cases graded in {time.monotonic() - start:.0f} s -> {args.out}")


# ---- compare (project env) -----------------------------------------------------------


def project_verdicts(cases: list[dict]) -> None:
    """Add `circuitry.data.grading.grade`'s answer and verdict to each case."""
    from circuitry.data.grading import grade

    for case in cases:
        case["project_pred"], case["project"] = grade(case["completion"], case["gold"])


def disagreement(case: dict) -> str | None:
    """Which grader matches the known truth where they disagree, or None."""
    if case["project"] == case["paper"]:
        return None
    return "project right" if case["project"] == case["truth"] else "paper right"


def _dataset_order(item: tuple) -> tuple:
    """Datasets in `DATASETS` order, each with its `all` row last."""
    (dataset, kind), _ = item
    return list(DATASETS).index(dataset), kind == "all"


def agreement_table(cases: list[dict]) -> str:
    """Markdown: per dataset and kind, agreement and who is right where they disagree."""
    groups = defaultdict(list)
    for case in cases:
        groups[case["dataset"], case["kind"]].append(case)
    for dataset in dict.fromkeys(case["dataset"] for case in cases):
        groups[dataset, "all"] = [case for case in cases if case["dataset"] == dataset]
    lines = [
        "| dataset | case | n | agree | project right, paper wrong | project wrong, paper right"
        " | both wrong | project acc | paper acc | paper timeouts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (dataset, kind), group in sorted(groups.items(), key=_dataset_order):
        n = len(group)
        counts = Counter(disagreement(c) for c in group)
        both_wrong = sum(c["project"] == c["paper"] != c["truth"] for c in group)
        project_acc = sum(c["project"] == c["truth"] for c in group) / n
        paper_acc = sum(c["paper"] == c["truth"] for c in group) / n
        lines.append(
            f"| {dataset} | {kind} | {n} | {counts[None] / n:.1%} | {counts['project right']} "
            f"| {counts['paper right']} | {both_wrong} | {project_acc:.1%} | {paper_acc:.1%} "
            f"| {sum(c['paper_timeout'] for c in group)} |"
        )
    return "\n".join(lines)


def _short(text: str | None, width: int = 70) -> str:
    text = repr(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def disagreement_examples(cases: list[dict], per_class: int) -> str:
    """Up to `per_class` disagreeing cases per dataset, kind and direction."""
    shown = Counter()
    lines = []
    for case in cases:
        direction = disagreement(case)
        key = (case["dataset"], case["kind"], direction)
        if direction is None or shown[key] >= per_class:
            continue
        shown[key] += 1
        lines += [
            f"[{case['dataset']} {case['kind']} idx {case['idx']}: {direction}, "
            f"truth {'correct' if case['truth'] else 'wrong'}]",
            f"  project: pred {_short(case['project_pred'])} gold {_short(case['gold'])}"
            f" -> {case['project']}",
            f"  paper:   pred {_short(case['paper_pred'])} gold {_short(case['paper_gold'])}"
            f" -> {case['paper']}",
        ]
    return "\n".join(lines)


def compare(args: argparse.Namespace) -> None:
    cases = list(read_jsonl(args.paper))
    start = time.monotonic()
    project_verdicts(cases)
    print(f"{len(cases)} cases graded by the project in {time.monotonic() - start:.0f} s\n")
    print(agreement_table(cases))
    print(f"\nDisagreements (up to {args.examples} per dataset, case and direction):\n")
    print(disagreement_examples(cases, args.examples))
    if args.out:
        write_jsonl(args.out, cases)


# ---- command line --------------------------------------------------------------------


def read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = cli.add_subparsers(dest="step", required=True)

    cases = steps.add_parser("cases", help="build the cases (project env)")
    cases.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    cases.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    cases.add_argument(
        "--sample", type=int, default=300, help="rows per dataset, drawn with a fixed seed"
    )
    cases.add_argument("--out", type=Path, required=True)
    cases.set_defaults(run=write_cases)

    paper = steps.add_parser("paper", help="grade the cases with the paper's code (paper env)")
    paper.add_argument("--evaluation", type=Path, required=True, help="the paper's evaluation/")
    paper.add_argument("--cases", type=Path, required=True)
    paper.add_argument("--out", type=Path, required=True)
    paper.set_defaults(run=write_paper_verdicts)

    comparison = steps.add_parser("compare", help="grade with circuitry and compare (project env)")
    comparison.add_argument("--paper", type=Path, required=True, help="output of `paper`")
    comparison.add_argument("--examples", type=int, default=3)
    comparison.add_argument("--out", type=Path, help="also write every graded case here")
    comparison.set_defaults(run=compare)
    return cli.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    arguments.run(arguments)
