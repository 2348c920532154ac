"""EAP engine on tiny random models of every supported family.

Exactness is checked in float64 against the definition (finite differences of edge
ablations) and against autograd (completeness); the other tests check that batching,
gradient checkpointing, dtype and failures do not change or corrupt the scores.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from circuitry.attribution import eap
from circuitry.attribution.ablation import ablation_check, perturbed_loss
from circuitry.attribution.eap import (
    model_graph,
    paper_context_excess,
    score_distinct_windows,
    score_samples,
    score_windows,
    write_role_scores,
)
from circuitry.attribution.samples import Sample, windowed_samples
from circuitry.attribution.scorefile import DIAGNOSTICS, LOSSES, load_edge_scores
from circuitry.attribution.window_loss import PositionStatistics

FAMILIES = ("llama", "mistral", "qwen2", "phi3", "gpt2")
VOCAB = 50
RMS_FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {"attention_bias": True, "mlp_bias": True}),
    "mistral": (MistralConfig, MistralForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "phi3": (Phi3Config, Phi3ForCausalLM, {}),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(
    family: str, n_layers: int = 2, dtype=torch.float64, init: float = 0.3, seed: int = 0
) -> torch.nn.Module:
    """A seeded random model: 4 query heads, 2 kv heads (GQA), hidden 32, every bias random.

    A large init keeps the model far from linear, so first-order agreement is not trivial.
    """
    torch.manual_seed(seed)
    special = {"bos_token_id": 1, "eos_token_id": 2, "initializer_range": init}
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=n_layers, n_head=4, n_positions=64, **special
        )
        model = GPT2LMHeadModel(config)
    else:
        config_class, model_class, extra = RMS_FAMILIES[family]
        config = config_class(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
            **special,
            **extra,
        )
        model = model_class(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, init)
    return model.to(dtype)


def make_samples(n: int, seed: int = 1) -> list[Sample]:
    """Samples of different prompt and answer lengths (5-12 tokens read)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        prompt = rng.integers(3, VOCAB, size=int(rng.integers(3, 6))).tolist()
        answer = rng.integers(3, VOCAB, size=int(rng.integers(3, 8))).tolist()
        cut_len = int(rng.integers(2, len(answer) + 1))
        samples.append(Sample(prompt, answer, cut_len, sample_id=f"s{i}"))
    return samples


def hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("family", FAMILIES)
def test_scores_match_finite_differences_of_edge_ablations(family, loss):
    model = tiny_model(family, n_layers=3)
    check = ablation_check(model, make_samples(1)[0], eps=1e-2, loss=loss)
    print(
        f"{family} {loss}: {len(check.edges)} edges, pearson r = {check.pearson_r:.8f}, "
        f"max abs error / max |score| = {check.relative_max_error:.2e} "
        f"(max |score| {check.max_abs_score:.3g})"
    )
    assert check.pearson_r >= 0.9999
    assert check.relative_max_error <= 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_column_sums_are_complete(family):
    """sum_u score[u, v] = -<dL/d in_v, in_v>, the derivative of L(in_v - eps * in_v) at 0.

    Every reader sits behind a scale-invariant norm, so both sides are nearly 0 (only the
    norm's epsilon breaks the invariance) while single scores are not: the error is
    measured against the largest |score|, the scale of the rounding error.
    """
    model = tiny_model(family)
    sample = make_samples(1, seed=2)[0]
    graph = model_graph(model)
    scores = score_samples(model, [sample], dtype=np.float64)[0]
    expected = []
    for target in graph.backward_nodes:
        eps = torch.zeros((), dtype=torch.float64, requires_grad=True)
        (derivative,) = torch.autograd.grad(perturbed_loss(model, sample, target, eps), eps)
        expected.append(derivative.item())
    residual = np.max(np.abs(scores.sum(axis=0) - expected)) / np.abs(scores).max()
    print(
        f"{family}: completeness residual (max |column sum + <dL/d in_v, in_v>| / max |score|) "
        f"= {residual:.1e}"
    )
    assert residual <= 1e-12


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_bfloat16_scores_match_float32(family):
    """Same (bf16-representable) weights; only the model's arithmetic differs.

    bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.4%); activations and gradients
    pick up a few such roundings per layer, so in this 3-layer model scores should differ by
    a few 0.1% to ~1% (measured: 0.2-1.2% of the scores' norm, r >= 0.99993). The bound, 5%
    and r >= 0.999, leaves margin for other platforms while still catching a wrong cast or
    a lost gradient path, which cost far more.
    """
    bf16 = tiny_model(family, n_layers=3, dtype=torch.bfloat16, init=0.02)
    fp32 = copy.deepcopy(bf16).float()
    samples = make_samples(3, seed=3)
    mask = model_graph(fp32).edge_mask
    low, high = score_samples(bf16, samples), score_samples(fp32, samples)
    assert low.dtype == np.float32
    for a, b in zip(low, high, strict=True):
        error = np.linalg.norm(a[mask] - b[mask]) / np.linalg.norm(b[mask])
        assert error <= 0.05
        assert np.corrcoef(a[mask], b[mask])[0, 1] >= 0.999


@pytest.mark.parametrize("family", FAMILIES)
def test_batches_give_the_scores_of_single_samples(family):
    model = tiny_model(family)
    samples = make_samples(5, seed=4)
    alone = np.stack([score_samples(model, [s], dtype=np.float64)[0] for s in samples])
    for batch_size in (1, 2, len(samples)):
        batched = score_samples(model, samples, batch_size=batch_size, dtype=np.float64)
        np.testing.assert_allclose(batched, alone, rtol=1e-9, atol=1e-12 * np.abs(alone).max())


def test_scores_have_the_graph_shape_and_zero_non_edges():
    model = tiny_model("llama")
    graph = model_graph(model)
    scores = score_samples(model, make_samples(2))
    assert scores.shape == (2, graph.n_forward, graph.n_backward)
    assert scores.dtype == np.float32
    assert np.all(scores[:, ~graph.edge_mask] == 0)
    assert np.all(scores[:, graph.edge_mask] != 0)


def test_gradient_checkpointing_and_train_mode_change_nothing():
    """A training-mode model with checkpointing and dropout scores like the plain model."""
    plain = tiny_model("llama")
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing_enable()
    checkpointed.train()
    for layer in checkpointed.model.layers:
        layer.self_attn.attention_dropout = 0.5
    samples = make_samples(2)
    np.testing.assert_allclose(
        score_samples(checkpointed, samples, dtype=np.float64),
        score_samples(plain, samples, dtype=np.float64),
        rtol=1e-12,
    )
    assert checkpointed.training and checkpointed.is_activation_checkpointing
    assert all(p.requires_grad for p in checkpointed.parameters())


def test_hooks_and_model_state_are_restored_after_success_and_error():
    model = tiny_model("phi3")
    model.train()
    before = hook_count(model)
    score_samples(model, make_samples(2), batch_size=2)
    assert hook_count(model) == before

    def fail(module, args, output):
        raise RuntimeError("boom")

    failing = model.model.layers[1].mlp.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        score_samples(model, make_samples(2))
    failing.remove()
    assert hook_count(model) == before
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_non_finite_scores_name_the_sample():
    model = tiny_model("qwen2")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("inf")
    before = hook_count(model)
    with pytest.raises(ValueError, match=r"not finite .*'s0' \(#0\)"):
        score_samples(model, make_samples(1))
    assert hook_count(model) == before


def test_unsupported_architecture_names_its_class():
    config = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
    )
    model = GPTNeoXForCausalLM(config)
    with pytest.raises(ValueError, match="GPTNeoXForCausalLM"):
        score_samples(model, make_samples(1))


def test_base_model_without_lm_head_is_refused():
    model = tiny_model("llama").model
    with pytest.raises(ValueError, match="LlamaModel has no module 'model.layers'"):
        model_graph(model)


def test_sample_window_must_fit_the_answer():
    with pytest.raises(ValueError, match="cut_len=4 is outside"):
        Sample([5, 6], [7, 8, 9], cut_len=4, sample_id=7)
    sample = Sample([5, 6, 7], [8, 9, 10], cut_len=2)
    assert sample.tokens == [5, 6, 7, 8, 9]
    assert list(sample.loss_positions) == [2, 3]


def test_ablation_rejects_non_edges():
    model = tiny_model("mistral")
    with pytest.raises(ValueError, match="no edge m1 -> a1.q"):
        perturbed_loss(model, make_samples(1)[0], "a1.q", 1e-3, source="m1")


def position_gradient_norms(model, sample: Sample) -> np.ndarray:
    """||softmax(z_t) - onehot(y_t)|| at each window position, from a plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([sample.tokens])).logits[0].double()
    positions = list(sample.loss_positions)
    targets = torch.tensor(sample.tokens)[[p + 1 for p in positions]]
    g = torch.softmax(logits[positions], dim=-1)
    g[torch.arange(len(positions)), targets] -= 1
    return g.norm(dim=-1).numpy()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ce_unit_is_the_mean_of_one_token_ce_scores_over_their_gradient_norms(family):
    """ce_unit of a window = mean over its positions t of (ce score of t alone) / ||g_t||.

    A one-token window at answer position t is the sample whose prompt runs up to t: the
    model is causal, so the positions before t read the same residuals either way.
    """
    model = tiny_model(family, n_layers=2).eval()  # no dropout in the plain forward
    sample = Sample([5, 9, 14, 3], [21, 7, 33, 12, 40, 8], cut_len=5, sample_id="w")
    norms = position_gradient_norms(model, sample)
    prompt, answer = list(sample.prompt_token_ids), list(sample.answer_token_ids)
    singles = [Sample(prompt + answer[:t], answer[t:], cut_len=1) for t in range(sample.cut_len)]
    one_token = score_samples(model, singles, dtype=np.float64)
    expected = (one_token / norms[:, None, None]).mean(axis=0)
    unit = score_samples(model, [sample], loss="ce_unit", dtype=np.float64)[0]
    # RMSNorm runs in float32 inside float64 models: sequences of other lengths round
    # differently at about 1e-7 of the largest score
    np.testing.assert_allclose(unit, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert not np.allclose(unit, score_samples(model, [sample], dtype=np.float64)[0])


def test_one_forward_pass_serves_every_loss():
    model = tiny_model("qwen2")
    samples = make_samples(3, seed=5)
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))
    both = score_windows(model, samples, LOSSES, batch_size=3, dtype=np.float64)
    handle.remove()
    assert len(forwards) == 1
    for loss in LOSSES:
        alone = score_samples(model, samples, loss=loss, dtype=np.float64)
        np.testing.assert_allclose(both[loss].scores, alone, rtol=1e-12)


def test_each_distinct_window_is_scored_once():
    """A repeated window (an alpha with the same cut_len, crossed text equal to the own
    answer) is scored once and shared; every condition gets the scores of its samples."""
    model = tiny_model("llama")
    samples = make_samples(4, seed=6)
    shorter = [Sample(s.prompt_token_ids, s.answer_token_ids, 1, s.sample_id) for s in samples]
    conditions = {"own": samples, "again": samples[::-1], "short": shorter}
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))
    scored = score_distinct_windows(model, conditions, LOSSES, batch_size=8, dtype=np.float64)
    handle.remove()
    assert len(forwards) == 1  # 8 distinct windows of 12 samples: one batch of 8
    for name, condition in conditions.items():
        expected = score_windows(model, condition, LOSSES, dtype=np.float64)
        for loss in LOSSES:
            np.testing.assert_allclose(
                scored[name][loss].scores, expected[loss].scores, rtol=1e-9, atol=1e-12
            )
            for key, values in expected[loss].diagnostics.items():
                np.testing.assert_allclose(scored[name][loss].diagnostics[key], values, rtol=1e-9)


def test_samples_beyond_the_papers_context_are_named_for_its_capped_families():
    """The paper's TransformerLens held 2048 tokens for Mistral and Qwen2: a longer
    prompt + window has no counterpart there; other families had no such cap."""
    short = Sample([1] * 2000, [3] * 100, 48)  # reads 2048 tokens
    long = Sample([1] * 2000, [3] * 100, 49)  # reads 2049
    for family in ("mistral", "qwen2"):
        assert paper_context_excess(tiny_model(family), [short]) is None
        message = paper_context_excess(tiny_model(family), [short, long])
        assert message.startswith("1 of 2 samples read more than the 2048 tokens")
        assert family in message
    assert paper_context_excess(tiny_model("llama"), [long]) is None


def window_logits_and_targets(model, sample: Sample):
    """Float64 logits at the window positions and the window's tokens, from a plain forward."""
    logits = model(torch.tensor([sample.tokens])).logits[0, list(sample.loss_positions)].double()
    return logits, torch.tensor(sample.answer_token_ids[: sample.cut_len])


def final_norm_input_gradient_norm(model, sample: Sample, loss: str) -> float:
    """||dL/d(final-norm input)||_F by autograd through a plain forward, L by its definition."""
    captured = {}
    handle = model.model.norm.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    with torch.enable_grad():
        logits, targets = window_logits_and_targets(model, sample)
        handle.remove()
        if loss == "ce":
            value = torch.nn.functional.cross_entropy(logits, targets)
        elif loss == "ce_unit":
            g = torch.softmax(logits.detach(), dim=-1)
            g[torch.arange(len(targets)), targets] -= 1
            value = (g / g.norm(dim=-1, keepdim=True) * logits).sum() / len(targets)
        else:
            lengths = target_lengths(model, sample)
            centred = logits.mean(dim=-1) - logits[torch.arange(len(targets)), targets]
            value = (centred / lengths).sum() / len(targets)
        (grad,) = torch.autograd.grad(value, captured["x"])
    return grad.norm().item()


def target_lengths(model, sample: Sample) -> torch.Tensor:
    """n_t = ||d(z_ty - mean_j z_tj)/dx_t|| per window position, one autograd call each."""
    captured = {}
    handle = model.model.norm.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    lengths = []
    with torch.enable_grad():
        for t, target in zip(sample.loss_positions, sample.answer_token_ids, strict=False):
            logits = model(torch.tensor([sample.tokens])).logits[0, t].double()
            (grad,) = torch.autograd.grad(logits[target] - logits.mean(), captured["x"])
            lengths.append(grad[0, t].norm())
    handle.remove()
    return torch.stack(lengths).detach()


def test_diagnostics_match_their_definitions():
    model = tiny_model("llama").eval()
    samples = make_samples(4, seed=6)
    scored = score_windows(model, samples, LOSSES, batch_size=2, dtype=np.float64)
    for i, sample in enumerate(samples):
        with torch.no_grad():
            logits, targets = window_logits_and_targets(model, sample)
        log_p = torch.log_softmax(logits, dim=-1)
        norms = position_gradient_norms(model, sample)
        expected = {
            "window_ce": -log_p[torch.arange(sample.cut_len), targets].mean().item(),
            "window_entropy": -(log_p.exp() * log_p).sum(dim=-1).mean().item(),
            "window_len": sample.cut_len,
        }
        grad_logits_norm = {
            "ce": norms.mean() / sample.cut_len,
            "ce_unit": 1 / sample.cut_len,
            "target_unit": ((1 - 1 / VOCAB) ** 0.5 / target_lengths(model, sample)).mean().item()
            / sample.cut_len,
        }
        for loss in LOSSES:
            diagnostics = {name: values[i] for name, values in scored[loss].diagnostics.items()}
            assert set(diagnostics) == set(DIAGNOSTICS)
            for name, value in expected.items():
                assert diagnostics[name] == pytest.approx(value, rel=1e-9), name
            # target_unit's lengths go back through Llama's RMSNorm, which computes in
            # float32 even in a float64 model: batched and single forwards round apart
            rel = 1e-6 if loss == "target_unit" else 1e-9
            assert diagnostics["grad_logits_norm"] == pytest.approx(grad_logits_norm[loss], rel=rel)
            assert diagnostics["grad_final_norm_input"] == pytest.approx(
                final_norm_input_gradient_norm(model, sample, loss), rel=rel
            )


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="losses must be distinct names among ce, ce_unit, tar"):
        score_windows(tiny_model("llama"), make_samples(1), ["ce", "kl"])


def test_non_finite_diagnostics_name_the_sample(monkeypatch):
    real = eap.position_statistics

    def nan_entropy_for_second_sample(logits, targets):
        window = real(logits, targets)
        entropy = window.entropy.index_fill(0, torch.tensor([1]), float("nan"))
        return PositionStatistics(window.ce, entropy, window.grad_norm)

    monkeypatch.setattr(eap, "position_statistics", nan_entropy_for_second_sample)
    samples = make_samples(2)
    samples.sort(key=lambda s: len(s.tokens))
    with pytest.raises(ValueError, match=r"diagnostics are not finite .*'s\d' \(#1\)"):
        score_windows(tiny_model("llama"), samples, batch_size=2)


def test_crossed_text_reads_the_other_answer_after_the_own_prompt():
    rows = [
        {
            "idx": 3,
            "base": {"prompt_token_ids": [1, 5], "completion_token_ids": [7, 8, 9]},
            "tuned": {"prompt_token_ids": [1, 6], "completion_token_ids": [4, 4]},
        }
    ]
    (own,) = windowed_samples(rows, "base", 3)
    (crossed,) = windowed_samples(rows, "base", 3, text="crossed")
    assert own.tokens == [1, 5, 7, 8, 9]
    assert crossed.tokens == [1, 5, 4, 4]  # the window is cut to the shorter answer
    assert windowed_samples(rows, "tuned", 1, text="crossed")[0].tokens == [1, 6, 7]
    with pytest.raises(ValueError, match="unknown text 'mixed'"):
        windowed_samples(rows, "base", 1, text="mixed")


def test_ce_unit_directions_stay_exact_for_a_model_sure_of_its_answer():
    """Where p_y rounds to 1 in float32, p_y - 1 loses every digit of g_t's target
    component; ce_unit (each g_t scaled to unit length) must still match float64."""
    sure = tiny_model("llama", n_layers=2).eval()
    with torch.no_grad():
        sure.lm_head.weight.mul_(40)
        tokens = [5, 9, 14, 3]
        for _ in range(6):  # the greedy answer, on which the model is sure
            tokens.append(int(sure(torch.tensor([tokens])).logits[0, -1].argmax()))
    sample = Sample(tokens[:4], tokens[4:], cut_len=6)
    float32 = copy.deepcopy(sure).float()
    p_target = torch.softmax(float32(torch.tensor([tokens])).logits[0, 3:-1], dim=-1).max(dim=-1)
    assert (p_target.values == 1.0).any()  # the case the exact target component is for
    exact = score_windows(sure, [sample], ["ce_unit"], dtype=np.float64)["ce_unit"]
    rounded = score_windows(float32, [sample], ["ce_unit"])["ce_unit"]
    assert rounded.diagnostics["grad_logits_norm"][0] == pytest.approx(1 / 6, rel=1e-6)
    mask = model_graph(sure).edge_mask
    error = np.linalg.norm(rounded.scores[0][mask] - exact.scores[0][mask])
    # measured: 0.15% (the float32 forward's own rounding); p_y - 1 instead gives 89%
    assert error <= 1e-2 * np.linalg.norm(exact.scores[0][mask])


def test_a_roles_score_files_hold_its_windows_of_every_condition(tmp_path, monkeypatch, caplog):
    """What rule eap_score writes for one model: a file per dataset x alpha x text x loss
    of its role only, each holding the scores of its windows and the condition scored,
    every condition scored in one pass; a paper-mode pairing warns where the paper's
    context is exceeded."""
    model = tiny_model("llama")
    samples = make_samples(4, seed=7)
    rows = [
        {
            "idx": 10 + i,
            "base": {
                "prompt_token_ids": s.prompt_token_ids,
                "completion_token_ids": s.answer_token_ids,
            },
            "tuned": {"prompt_token_ids": s.prompt_token_ids, "completion_token_ids": [5, 6, 7, 8]},
        }
        for i, s in enumerate(samples)
    ]
    pair_rows = {"exact-set": rows, "paper-set": rows[::-1]}
    summaries = {
        "exact-set": {"reference_length_fraction": "6", "settings": {"mode": "exact"}},
        "paper-set": {"reference_length_fraction": "13/2", "settings": {"mode": "paper"}},
    }
    files = {
        (role, dataset, alpha, text, loss): tmp_path / f"{role}-{dataset}-{alpha}-{text}-{loss}.npz"
        for role in ("base", "tuned")
        for dataset in pair_rows
        for alpha in ("0.1", "0.5")
        for text in ("own", "crossed")
        for loss in LOSSES
    }
    monkeypatch.setitem(eap.PAPER_CONTEXT_CAPS, "llama", 5)  # most windows read more
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))
    with caplog.at_level("WARNING", logger="circuitry.attribution.eap"):
        write_role_scores(model, "base", pair_rows, summaries, files, LOSSES, batch_size=64)
    handle.remove()
    assert len(forwards) == 1  # every condition's distinct windows in one batch
    warned = [r.getMessage().split(":")[0] for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [  # only where the pairing follows the paper's code
        f"base on paper-set, alpha {alpha}, {text} text"
        for alpha in ("0.1", "0.5")
        for text in ("own", "crossed")
    ]
    assert not any(path.exists() for (role, *_), path in files.items() if role == "tuned")
    cut_lens = {(dataset, "0.1"): 1 for dataset in pair_rows}  # max(1, 0.6), max(1, 0.65)
    cut_lens |= {(dataset, "0.5"): 3 for dataset in pair_rows}
    for (role, dataset, alpha, text, loss), path in files.items():
        if role != "base":
            continue
        written = load_edge_scores(
            path,
            role="base",
            loss=loss,
            text=text,
            text_role=eap.text_role("base", text),
            model_type="llama",
        )
        assert written.condition["alpha"] == float(alpha)
        assert written.condition["cut_len"] == cut_lens[dataset, alpha]
        assert (
            written.condition["reference_length"] == {"exact-set": 6.0, "paper-set": 6.5}[dataset]
        )
        np.testing.assert_array_equal(written.idx, [row["idx"] for row in pair_rows[dataset]])
        expected = score_windows(
            model,
            windowed_samples(pair_rows[dataset], "base", cut_lens[dataset, alpha], text),
            [loss],
        )[loss]
        # batched with other windows: RMSNorm's float32 rounding differs at ~1e-7
        np.testing.assert_allclose(
            written.scores, expected.scores, rtol=0, atol=1e-5 * np.abs(expected.scores).max()
        )
        np.testing.assert_allclose(
            written.diagnostics["window_len"], expected.diagnostics["window_len"]
        )
