"""Greedy batched generation on a tiny random Llama: exact ids, finish reasons, resuming."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
import torch
from huggingface_hub import ResolvedRevision
from transformers import ContinuousBatchingManager, LlamaConfig, LlamaForCausalLM

from circuitry.generation import resumable
from circuitry.generation.decoding import (
    BACKENDS,
    StopStringCriterion,
    StopStrings,
    completion_end,
    decode,
    first_end,
    generate_batch,
    generate_continuous,
)
from circuitry.generation.resumable import (
    generate_rows,
    greedy_predictions,
    partial_path_for,
    plan_batches,
    read_partial,
    teacher_forcing,
    write_generations,
)
from circuitry.models import loading
from circuitry.models.loading import load_model
from circuitry.models.sources import ModelUnavailableError, resolve_hub_revision
from circuitry.models.tokenizer import build_char_tokenizer
from circuitry.provenance import model_fingerprint
from conftest import model_entry, prompt_template

EOS = 2
QUESTIONS = [
    "What is 2 + 3?",
    "Ann has 12 apples. She gets 7 more. How many apples does Ann have now?",
    "9-4",
    "x",
    "17*3=",
    "Bob reads 4 pages a day for 6 days.",
]
RAW = prompt_template("raw", user="{question}\n")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny_model(path, **generation_settings):
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,
    )
    model = LlamaForCausalLM(config)
    for key, value in generation_settings.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def lm(model_dir):
    return load_model(model_entry(path=str(model_dir), gpu=False))


def prompt_ids(lm, question):
    return lm.tokenizer(question + "\n")["input_ids"]


def greedy_reference(lm, ids, n):
    """Greedy continuation by full forward passes, one token at a time, no cache."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = lm.model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


@pytest.fixture(scope="module")
def free_run(lm):
    """40 greedy tokens of one prompt, with no EOS among them (checked)."""
    ids = prompt_ids(lm, QUESTIONS[0])
    completion = generate_batch(lm, {0: ids}, 40)[0]
    assert completion.finish_reason == "length"
    return ids, completion.token_ids


def test_loaded_local_model_runs_float32_on_cpu(lm, model_dir):
    assert (lm.device.type, lm.dtype, lm.revision) == ("cpu", torch.float32, None)
    assert lm.eos_token_ids == (EOS,)
    assert lm.identity.startswith("path:")
    assert lm.provenance()["dtype"] == "float32"
    assert lm.provenance()["fingerprint"] == model_fingerprint(model_dir)
    assert lm.identity.endswith(f":{model_fingerprint(model_dir)}")


@pytest.mark.parametrize("keep", [0, 7, 1000])  # empty, header cut, data cut
def test_a_corrupt_weight_file_is_named(model_dir, tmp_path, keep):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(ModelUnavailableError, match="corrupt or incomplete weight file") as error:
        load_model(model_entry(path=str(broken), gpu=False))
    assert str(error.value).startswith(f"{weights}: ")


def test_generation_is_greedy(lm):
    ids = prompt_ids(lm, QUESTIONS[1])
    expected = greedy_reference(lm, ids, 20)
    completion = generate_batch(lm, {0: ids}, 20)[0]
    cut = expected.index(EOS) if EOS in expected else len(expected)
    assert completion.token_ids == expected[:cut]


def test_left_padded_batch_matches_one_prompt_at_a_time(lm):
    prompts = {idx: prompt_ids(lm, q) for idx, q in enumerate(QUESTIONS)}
    assert len({len(p) for p in prompts.values()}) == len(prompts)
    batched = generate_batch(lm, prompts, 24, stop=("Q",))
    alone = [generate_batch(lm, {idx: p}, 24, stop=("Q",))[0] for idx, p in prompts.items()]
    assert batched == alone
    assert {c.finish_reason for c in batched} >= {"stop", "length"}


def test_eos_ends_the_completion_and_is_left_out(lm, free_run):
    ids, free = free_run
    k = next(i for i in range(5, len(free)) if free[i] not in free[:i])
    with_eos = dataclasses.replace(lm, eos_token_ids=(EOS, free[k]))
    completion = generate_batch(with_eos, {0: ids}, 40)[0]
    assert completion.finish_reason == "eos"
    assert completion.token_ids == free[:k]
    assert completion.text == decode(lm.tokenizer, free[:k])


def test_stop_string_ends_the_completion_with_the_token_that_completes_it(
    lm, free_run, monkeypatch
):
    ids, free = free_run
    stop = decode(lm.tokenizer, free[6:8])
    end = next(n for n in range(1, len(free) + 1) if stop in decode(lm.tokenizer, free[:n]))
    widths = []
    real_generate = lm.model.generate

    def spy(**kwargs):
        output = real_generate(**kwargs)
        widths.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    monkeypatch.setattr(lm.model, "generate", spy)
    completion = generate_batch(lm, {0: ids}, 40, stop=(stop,))[0]
    assert completion.finish_reason == "stop"
    assert completion.token_ids == free[:end]
    assert completion.text.endswith(stop)
    assert widths == [end]


def test_length_limit(lm, free_run):
    ids, free = free_run
    completion = generate_batch(lm, {0: ids}, 7)[0]
    assert (completion.finish_reason, completion.token_ids) == ("length", free[:7])


def test_completion_end_rules(lm):
    tokenizer = lm.tokenizer
    a, b, c = tokenizer.convert_tokens_to_ids(["a", "b", "c"])
    stops = StopStrings(tokenizer, ["bc", "</s>"])
    assert completion_end([a, b, c, a], [EOS], stops, 10) == (3, "stop")
    assert completion_end([a, EOS, c], [EOS], stops, 10) == (1, "eos")
    assert completion_end([a, a, a], [EOS], stops, 3) == (3, "length")
    assert completion_end([], [EOS], None, 0) == (0, "length")
    with pytest.raises(RuntimeError, match="after 2 of 5 tokens"):
        completion_end([a, a], [EOS], stops, 5)


def test_stop_criterion_looks_only_at_generated_tokens(lm):
    tokenizer = lm.tokenizer
    b, c, x = tokenizer.convert_tokens_to_ids(["b", "c", "x"])
    criterion = StopStringCriterion(StopStrings(tokenizer, ["bc"]), prompt_width=2)
    input_ids = torch.tensor([[b, c, x, x], [x, x, b, c], [x, b, c, x]])
    assert criterion(input_ids, None).tolist() == [False, True, False]


def test_rows_store_the_exact_token_ids(lm, tmp_path):
    problems = [{"idx": 10 + i, "question": q} for i, q in enumerate(QUESTIONS)]
    template = prompt_template("raw", user="Q: {question}\nA:", stop=("Q",))
    rows = generate_rows(
        lm,
        template,
        problems[::-1],
        max_new_tokens=16,
        batch_size=4,
        partial_path=tmp_path / "out.partial",
        progress=False,
    )
    assert [row["idx"] for row in rows] == [p["idx"] for p in problems]
    for row, problem in zip(rows, problems, strict=True):
        assert row["prompt"] == f"Q: {problem['question']}\nA:"
        assert row["prompt_token_ids"] == lm.tokenizer(row["prompt"])["input_ids"]
        assert decode(lm.tokenizer, row["completion_token_ids"]) == row["completion"]
        assert row["finish_reason"] in ("eos", "stop", "length")


def test_checkpoint_generation_defaults_do_not_leak(lm, tmp_path):
    sampling = save_tiny_model(
        tmp_path / "sampling",
        do_sample=True,
        temperature=0.7,
        repetition_penalty=2.0,
        eos_token_id=[EOS, 50],
    )
    loaded = load_model(model_entry(path=str(sampling), gpu=False))
    assert loaded.eos_token_ids == (EOS, 50)
    assert loaded.model.generation_config.do_sample is None
    prompts = {idx: prompt_ids(lm, q) for idx, q in enumerate(QUESTIONS[:3])}
    expected = generate_batch(dataclasses.replace(lm, eos_token_ids=(EOS, 50)), prompts, 20)
    assert generate_batch(loaded, prompts, 20) == expected


def test_hub_models_load_model_and_tokenizer_at_one_resolved_commit(model_dir, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    resolved = ResolvedRevision(commit, initial="main", repo_id="org/model")
    calls = []

    def recording(load):
        def from_pretrained(source, **kwargs):
            calls.append((source, kwargs["revision"], kwargs["trust_remote_code"]))
            return load()

        return from_pretrained

    monkeypatch.setattr("transformers.utils.hub.resolve_revision", lambda hub_id, rev: resolved)
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", recording(build_char_tokenizer))
    monkeypatch.setattr(
        loading.AutoModelForCausalLM,
        "from_pretrained",
        recording(lambda: LlamaForCausalLM.from_pretrained(model_dir)),
    )
    loaded = load_model(model_entry(hub_id="org/model", gpu=False))
    assert calls == [("org/model", resolved, False)] * 2
    assert loaded.revision == commit
    assert loaded.identity == f"hub:org/model@{commit}"


def test_hub_revision_falls_back_to_what_is_known_offline(monkeypatch):
    monkeypatch.setattr("transformers.utils.hub.resolve_revision", lambda hub_id, rev: rev)
    assert resolve_hub_revision("org/model", "main") == ("main", None)
    pinned = "89abcdef0123456789abcdef0123456789abcdef"
    assert resolve_hub_revision("org/model", pinned) == (pinned, pinned)


def test_batches_put_the_longest_prompts_first_and_break_ties_by_idx():
    lengths = {5: 3, 1: 7, 2: 3, 9: 9, 4: 1}
    assert plan_batches(lengths, 2) == [[9, 1], [2, 5], [4]]


PROBLEMS = [{"idx": i, "question": f"{i} + {i * 7 % 13} = ?" + "!" * (i % 4)} for i in range(10)]


def run(lm, output, **overrides):
    settings = {"max_new_tokens": 12, "batch_size": 3, "progress": False}
    settings.update(overrides)
    partial = partial_path_for(output)
    rows = generate_rows(lm, RAW, PROBLEMS, partial_path=partial, **settings)
    write_generations(output, rows, partial)
    return rows


class Interrupted(Exception):
    pass


def count_batches(monkeypatch, fail_on_call=None):
    """Wrap generate_batch: count calls and rows; raise on call number `fail_on_call`."""
    counts = {"calls": 0, "rows": 0}
    real = resumable.generate_batch

    def counting(lm, prompts, *args, **kwargs):
        counts["calls"] += 1
        if counts["calls"] == fail_on_call:
            raise Interrupted
        counts["rows"] += len(prompts)
        return real(lm, prompts, *args, **kwargs)

    monkeypatch.setattr(resumable, "generate_batch", counting)
    return counts


@pytest.fixture(scope="module")
def uninterrupted(lm, tmp_path_factory):
    output = tmp_path_factory.mktemp("clean") / "gen.jsonl"
    run(lm, output)
    return output.read_bytes()


def interrupt_after_two_batches(lm, output, monkeypatch):
    count_batches(monkeypatch, fail_on_call=3)
    with pytest.raises(Interrupted):
        run(lm, output)
    assert not output.exists()
    lines = partial_path_for(output).read_text().splitlines()
    assert len(lines) == 1 + 2 * 3


def test_interrupted_run_resumes_to_the_same_bytes(lm, tmp_path, monkeypatch, uninterrupted):
    output = tmp_path / "gen.jsonl"
    interrupt_after_two_batches(lm, output, monkeypatch)
    counts = count_batches(monkeypatch)
    run(lm, output)
    assert counts == {"calls": 2, "rows": 4}
    assert output.read_bytes() == uninterrupted
    assert not partial_path_for(output).exists()


def test_line_torn_by_a_kill_is_dropped_and_its_rows_regenerated(
    lm, tmp_path, monkeypatch, uninterrupted
):
    output = tmp_path / "gen.jsonl"
    interrupt_after_two_batches(lm, output, monkeypatch)
    partial = partial_path_for(output)
    lines = partial.read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:-1]) + lines[-1][:20])
    counts = count_batches(monkeypatch)
    run(lm, output)
    assert counts == {"calls": 3, "rows": 7}
    assert output.read_bytes() == uninterrupted


def test_partial_file_of_other_settings_is_not_reused(lm, tmp_path, monkeypatch):
    output = tmp_path / "gen.jsonl"
    interrupt_after_two_batches(lm, output, monkeypatch)
    counts = count_batches(monkeypatch)
    rows = run(lm, output, max_new_tokens=5)
    assert counts == {"calls": 4, "rows": 10}
    assert all(len(row["completion_token_ids"]) <= 5 for row in rows)


STOPPING = prompt_template("raw", user="Q: {question}\nA:", stop=("Q",))
# Prompts of many lengths, so continuous batching admits and retires rows at many steps.
MANY = [{"idx": i, "question": q + " " * (i // 6)} for i, q in enumerate(QUESTIONS * 3)]


def test_continuous_backend_writes_the_rows_the_static_backend_writes(lm, tmp_path):
    """Float32 on CPU: paged attention with rows joining and leaving gives the same greedy
    completions, ended by the same rules, as fixed left-padded batches."""
    settings = {"max_new_tokens": 30, "batch_size": 4, "progress": False}
    static, continuous = (
        generate_rows(lm, STOPPING, MANY, partial_path=tmp_path / b, backend=b, **settings)
        for b in ("static", "continuous")
    )
    assert continuous == static
    assert {row["finish_reason"] for row in continuous} == {"eos", "stop", "length"}


def test_continuous_backend_cancels_a_row_once_its_stop_string_appears(lm, free_run, monkeypatch):
    ids, free = free_run
    stop = decode(lm.tokenizer, free[6:8])
    cancelled = []
    manager = ContinuousBatchingManager
    real_cancel = manager.cancel_request
    monkeypatch.setattr(
        manager, "cancel_request", lambda self, rid: cancelled.append(rid) or real_cancel(self, rid)
    )
    ((idx, completion),) = [
        row for group in generate_continuous(lm, {7: ids}, 400, stop=(stop,)) for row in group
    ]
    assert (idx, completion.finish_reason, completion.token_ids) == (
        7,
        "stop",
        free[: len(completion.token_ids)],
    )
    assert cancelled == ["idx-7"]


def test_continuous_run_resumes_exactly_the_missing_rows(lm, tmp_path, monkeypatch, uninterrupted):
    output = tmp_path / "gen.jsonl"
    real = resumable.generate_continuous
    asked = []

    def first_group_then_killed(lm, prompts, *args):
        asked.append(sorted(prompts))
        groups = real(lm, prompts, *args)
        yield next(groups)
        groups.close()
        raise Interrupted

    monkeypatch.setattr(resumable, "generate_continuous", first_group_then_killed)
    with pytest.raises(Interrupted):
        run(lm, output, backend="continuous")
    kept = {
        json.loads(line)["idx"] for line in partial_path_for(output).read_text().splitlines()[1:]
    }
    assert 0 < len(kept) < len(PROBLEMS)
    monkeypatch.setattr(
        resumable,
        "generate_continuous",
        lambda lm, prompts, *a: asked.append(sorted(prompts)) or real(lm, prompts, *a),
    )
    run(lm, output, backend="continuous")
    assert asked == [sorted(p["idx"] for p in PROBLEMS), sorted(set(asked[0]) - kept)]
    assert output.read_bytes() == uninterrupted  # the static backend's bytes


def test_an_unknown_backend_is_named(lm, tmp_path):
    with pytest.raises(ValueError, match="backend 'paged' is not one of static, continuous"):
        run(lm, tmp_path / "gen.jsonl", backend="paged")


def test_scanning_streamed_tokens_finds_the_end_completion_end_finds(lm):
    tokenizer = lm.tokenizer
    stops = StopStrings(tokenizer, ["bc"])
    for text in ("aabca", "abab", "a</s>bc", "bcbc"):
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        scanned, end = 0, None
        for n in range(1, len(tokens) + 1):  # one streamed token at a time
            end = first_end(tokens[:n], [EOS], stops, start=scanned)
            scanned = n
            if end is not None:
                break
        expected = completion_end(tokens, [EOS], stops, len(tokens))
        assert (end or (len(tokens), "length")) == expected


def test_read_partial_rejects_a_file_without_header(tmp_path):
    partial = tmp_path / "gen.jsonl.partial"
    partial.write_text(json.dumps({"idx": 0}) + "\n")
    assert read_partial(partial, "abc") == {}


def test_the_generating_model_reproduces_its_own_answers_under_teacher_forcing(lm, tmp_path):
    problems = [{"idx": i, "question": q} for i, q in enumerate(QUESTIONS)]
    rows = generate_rows(
        lm, RAW, problems, max_new_tokens=24, batch_size=4, partial_path=tmp_path / "p"
    )
    own = teacher_forcing(lm, rows, batch_size=3)
    assert own.n_tokens == sum(len(r["completion_token_ids"]) for r in rows) > 0
    assert (own.agreement, own.first_disagreement) == (1.0, {})


def test_teacher_forcing_catches_answers_another_model_wrote(lm, tmp_path):
    other = load_model(model_entry(path=str(save_tiny_model(tmp_path / "other")), gpu=False))
    torch.manual_seed(1)
    with torch.no_grad():  # another model of the same shape and vocabulary
        for parameter in other.model.parameters():
            parameter.add_(torch.randn_like(parameter))
    problems = [{"idx": i, "question": q} for i, q in enumerate(QUESTIONS)]
    rows = generate_rows(
        other, RAW, problems, max_new_tokens=24, batch_size=4, partial_path=tmp_path / "p"
    )
    swapped = teacher_forcing(lm, rows, batch_size=4)
    assert swapped.agreement < 0.5
    assert set(swapped.first_disagreement) == {r["idx"] for r in rows if r["completion_token_ids"]}
    for row in rows:  # the first departure is where lm's greedy choice differs
        position = swapped.first_disagreement.get(row["idx"])
        if position is not None:
            (predicted,) = greedy_predictions(lm, [row])
            assert predicted[position] != row["completion_token_ids"][position]
            assert predicted[:position].tolist() == row["completion_token_ids"][:position]
    assert swapped.shortfall(0.0) is None
    assert swapped.shortfall(0.99).startswith(
        f"its own forward reproduces only {swapped.agreement:.2%} of the completion tokens"
    )
    summary = swapped.as_dict()
    assert summary["n_rows_disagreeing"] == len(swapped.first_disagreement)


def broken_copy(model_dir, break_weights):
    """The tiny model loaded afresh, then its weights broken in place by `break_weights`."""
    broken = load_model(model_entry(path=str(model_dir), gpu=False))
    with torch.no_grad():
        break_weights(broken.model)
    return broken


def nan_head(model):
    model.lm_head.weight.fill_(float("nan"))


def nan_hash(model):
    """NaN as the embedding of `#`: only a sequence holding a `#` gets NaN logits."""
    hash_id = build_char_tokenizer().convert_tokens_to_ids("#")
    model.get_input_embeddings().weight[hash_id] = float("nan")


def non_finite(lm, idx, activity="generating"):
    return re.escape(
        f"{lm.source}: non-finite logits (NaN or inf) while {activity} idx {idx}; "
        "the weights or the dtype (fp16 overflow?) are broken"
    )


# Longest question first: idx 17 leads the first batch (static) and the first requests
# (continuous).
FROM_17 = [
    {"idx": 17 + i, "question": q} for i, q in enumerate(sorted(QUESTIONS, key=len, reverse=True))
]
# Only idx 4 holds a `#`; it is never the lowest idx of its batch of 3 (static: [1, 5, 0] and
# [4, 2, 3]; teacher forcing: any batch of 3 holding 4 holds a lower idx).
HASHED = [{"idx": i, "question": q + " #" * (i == 4)} for i, q in enumerate(QUESTIONS)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_logits_fail_generation_naming_the_model_and_the_first_row(
    model_dir, tmp_path, backend
):
    broken = broken_copy(model_dir, nan_head)
    partial = tmp_path / "gen.jsonl.partial"
    with pytest.raises(ValueError, match=non_finite(broken, 17)):
        generate_rows(
            broken,
            RAW,
            FROM_17,
            max_new_tokens=12,
            batch_size=3,
            partial_path=partial,
            backend=backend,
            progress=False,
        )
    assert len(partial.read_text().splitlines()) == 1  # the header: no garbage row kept


def test_static_generation_names_the_row_whose_logits_are_non_finite(model_dir, tmp_path):
    broken = broken_copy(model_dir, nan_hash)
    with pytest.raises(ValueError, match=non_finite(broken, 4)):
        generate_rows(
            broken, RAW, HASHED, max_new_tokens=24, batch_size=3, partial_path=tmp_path / "p"
        )


def test_teacher_forcing_fails_on_non_finite_logits(lm, model_dir, tmp_path):
    rows = generate_rows(
        lm, RAW, HASHED, max_new_tokens=24, batch_size=3, partial_path=tmp_path / "p"
    )
    broken = broken_copy(model_dir, nan_hash)
    with pytest.raises(ValueError, match=non_finite(broken, 4, "teacher forcing")):
        teacher_forcing(broken, rows, batch_size=3)
    empty = [dict(row, completion_token_ids=[]) for row in rows]  # the logits of the end count
    with pytest.raises(ValueError, match=non_finite(broken, 4, "teacher forcing")):
        teacher_forcing(broken, empty, batch_size=3)
