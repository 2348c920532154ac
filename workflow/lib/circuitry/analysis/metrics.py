"""Circuit metrics: what each number made of a base and a tuned model's EAP edge scores is.

`METRICS` holds every metric's definition; `circuitry.analysis.sample_metrics`,
`circuitry.analysis.pooled_metrics` and `circuitry.analysis.circuit_metrics` compute them.

For one sample, `w` is the vector of its EAP scores on the real edges of the graph
(`edge_mask`); `a = |w|`. Entropies use the natural log (nats) with `0 log 0 = 0`.

Per sample (one value per problem and role):

- `intensity`      activation intensity, `mean(a)`;
- `entropy`        information complexity (headline): Shannon entropy of the normalised
                   edge mass `p = a / sum(a)`;
- `entropy_hist`   information complexity (variant): Shannon entropy of the histogram of
                   `a` over `HIST_BINS` equal-width bins on `[0, U]`, `U` the
                   `HIST_UPPER_QUANTILE` quantile of `a` pooled over all samples of both
                   roles; values above `U` count in the last bin. The shared grid puts the
                   same `|w|` in the same bin for both models, and the quantile (not the
                   maximum) keeps one extreme edge from squeezing every other edge into the
                   first bin (EAP scores are heavy-tailed);
- `kurtosis`       distribution kurtosis (headline): excess kurtosis of `w`
                   (`scipy.stats.kurtosis`, `fisher=True`, `bias=True`: the edges are the
                   whole graph, not a sample from a larger population);
- `kurtosis_abs`   distribution kurtosis (variant): the same of `a`;
- `node_entropy`   mean over forward nodes of the entropy of each node's normalised
                   outgoing `a` (over its real out-edges).

Readings the paper's text leaves open (variants of the same quantities):

- `entropy_hist_sample`  the histogram entropy on each sample's own grid `[0, U_i]`, `U_i`
                   the same quantile of that sample's `a`: scale-free, so a model that is
                   merely surer (all `|w|` smaller) keeps its value;
- `entropy_hist_full`    the shared-grid histogram entropy over the full
                   `[n_forward, n_backward]` matrix, non-edges counted as zeros (the
                   paper's code saves full matrices). The mass entropy is the same with or
                   without the zeros (`0 log 0 = 0`), so it has no full-matrix variant;
- `kurtosis_full`  excess kurtosis of the full matrix, non-edges as zeros;
- `kurtosis_pearson`     the Pearson kurtosis of `w` (excess + 3): the same change, another
                   percentage;
- `node_entropy_norm`    mean over forward nodes with at least two out-edges of the node's
                   out-edge entropy divided by `log(out-degree)`, so nodes of different
                   out-degree (1 to about 4L) weigh alike.

Pooled (one value per role, tested with a paired permutation test):

- `diversity`        cross-sample diversity (headline): mean pairwise cosine distance
                     `1 - cos(a_i, a_j)` over all pairs of samples `i < j`;
- `diversity_signed` the same of signed `w`: two circuits using the same edges with
                     opposite signs count as different;
- `diversity_cv`     mean over edges of the coefficient of variation of `a` across
                     samples (population std over mean; edges whose mean is 0 left out):
                     scale-free per edge, where the cosine weighs the large edges;
- `pooled_entropy`   entropy of `a` normalised over every sample x edge of the role (the
                     paper's "overall distribution formed by all |w|", read literally);
- `pooled_entropy_hist` entropy of the histogram of every sample x edge `a` of the role,
                     on the shared grid of `entropy_hist` (scale-dependent like it);
- `profile_entropy`  entropy of the normalised sample-mean `a` profile: how spread the
                     average circuit is (the mean of per-sample entropies is not that);
- `profile_kurtosis` excess kurtosis of the sample-mean `w` profile.

The pooled mean of `a` is not listed: it equals the mean of per-sample intensities.
A metric is NaN where it is undefined (all-zero scores, a constant `w`, fewer than two
samples for diversity). Expected directions after RL (the paper's findings): intensity
up, entropy up, kurtosis down, diversity up.

Confidence (`CONFIDENCE_METRICS`, per sample, from the score file's diagnostics):
`window_ce`, the model's mean cross-entropy on the answer window it read, and
`window_entropy`, its mean predictive entropy there. They say how sure the model is of
the text it was scored on, which the paper's loss folds into every `|w|`.

Texts: each model is scored on its own answer (`own`) and, where the run scores it, on
the other model's answer (`crossed`); the per-sample table holds every (role, text).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

ROLES = ("base", "tuned")
HIST_BINS = 50
HIST_UPPER_QUANTILE = 0.99


@dataclass(frozen=True)
class MetricSpec:
    """What a metric measures, how, and which way the paper says RL moves it."""

    name: str
    quantity: str
    variant: str
    kind: str  # "per-sample" | "pooled"
    headline: bool
    expected: int  # +1: expected to rise after RL, -1: to fall
    definition: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            name="intensity",
            quantity="activation intensity",
            variant="mean |w|",
            kind="per-sample",
            headline=True,
            expected=+1,
            definition="mean of |w| over the real edges",
        ),
        MetricSpec(
            name="entropy",
            quantity="information complexity",
            variant="normalised edge mass",
            kind="per-sample",
            headline=True,
            expected=+1,
            definition="Shannon entropy (nats) of p = |w| / sum |w|",
        ),
        MetricSpec(
            name="entropy_hist",
            quantity="information complexity",
            variant="histogram of |w|",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of the histogram of |w| on equal-width bins over "
                "[0, U] shared by both roles, U a quantile of |w| over both roles, larger "
                f"values in the last bin (default {HIST_BINS} bins, U the "
                f"{HIST_UPPER_QUANTILE:g} quantile; the metrics JSON records both)"
            ),
        ),
        MetricSpec(
            name="kurtosis",
            quantity="distribution kurtosis",
            variant="w",
            kind="per-sample",
            headline=True,
            expected=-1,
            definition="excess kurtosis of w (scipy.stats.kurtosis, fisher=True, bias=True)",
        ),
        MetricSpec(
            name="kurtosis_abs",
            quantity="distribution kurtosis",
            variant="|w|",
            kind="per-sample",
            headline=False,
            expected=-1,
            definition="excess kurtosis of |w| (scipy.stats.kurtosis, fisher=True, bias=True)",
        ),
        MetricSpec(
            name="node_entropy",
            quantity="information complexity",
            variant="mean per-node out-edge entropy",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "mean over forward nodes of the entropy (nats) of the node's normalised "
                "outgoing |w|"
            ),
        ),
        MetricSpec(
            name="entropy_hist_sample",
            quantity="information complexity",
            variant="histogram of |w| on the sample's own grid",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of the histogram of |w| on equal-width bins over "
                "[0, U_i], U_i the sample's own |w| quantile (scale-free)"
            ),
        ),
        MetricSpec(
            name="entropy_hist_full",
            quantity="information complexity",
            variant="histogram of |w|, full matrix",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "the shared-grid histogram entropy over the full [n_forward, n_backward] "
                "matrix, non-edges counted as zeros"
            ),
        ),
        MetricSpec(
            name="kurtosis_full",
            quantity="distribution kurtosis",
            variant="w, full matrix",
            kind="per-sample",
            headline=False,
            expected=-1,
            definition="excess kurtosis of the full [n_forward, n_backward] matrix, non-edges 0",
        ),
        MetricSpec(
            name="kurtosis_pearson",
            quantity="distribution kurtosis",
            variant="w, Pearson",
            kind="per-sample",
            headline=False,
            expected=-1,
            definition="Pearson kurtosis of w (scipy.stats.kurtosis, fisher=False, bias=True)",
        ),
        MetricSpec(
            name="node_entropy_norm",
            quantity="information complexity",
            variant="per-node out-edge entropy / log(out-degree)",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "mean over forward nodes with at least two out-edges of the node's out-edge "
                "entropy (nats) divided by log(out-degree)"
            ),
        ),
        MetricSpec(
            name="diversity",
            quantity="cross-sample diversity",
            variant="mean pairwise cosine distance",
            kind="pooled",
            headline=True,
            expected=+1,
            definition="mean over sample pairs i < j of 1 - cos(|w_i|, |w_j|)",
        ),
        MetricSpec(
            name="diversity_signed",
            quantity="cross-sample diversity",
            variant="mean pairwise cosine distance of signed w",
            kind="pooled",
            headline=False,
            expected=+1,
            definition="mean over sample pairs i < j of 1 - cos(w_i, w_j), signs kept",
        ),
        MetricSpec(
            name="diversity_cv",
            quantity="cross-sample diversity",
            variant="mean per-edge coefficient of variation",
            kind="pooled",
            headline=False,
            expected=+1,
            definition=(
                "mean over edges of std / mean of |w| across samples (population std; "
                "edges with mean 0 left out)"
            ),
        ),
        MetricSpec(
            name="pooled_entropy",
            quantity="information complexity",
            variant="all samples x edges, mass",
            kind="pooled",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of p = |w| / sum |w| over every sample x edge of the "
                "role: the paper's 'overall distribution formed by all |w|'"
            ),
        ),
        MetricSpec(
            name="pooled_entropy_hist",
            quantity="information complexity",
            variant="all samples x edges, histogram",
            kind="pooled",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of the histogram of every sample x edge |w| of the "
                "role, on the shared grid of entropy_hist"
            ),
        ),
        MetricSpec(
            name="profile_entropy",
            quantity="information complexity",
            variant="sample-mean |w| profile",
            kind="pooled",
            headline=False,
            expected=+1,
            definition="Shannon entropy (nats) of the normalised sample-mean |w| profile",
        ),
        MetricSpec(
            name="profile_kurtosis",
            quantity="distribution kurtosis",
            variant="sample-mean w profile",
            kind="pooled",
            headline=False,
            expected=-1,
            definition="excess kurtosis of the sample-mean w profile (bias=True)",
        ),
    )
}
PER_SAMPLE_METRICS = tuple(name for name, spec in METRICS.items() if spec.kind == "per-sample")
POOLED_METRICS = tuple(name for name, spec in METRICS.items() if spec.kind == "pooled")
HEADLINE_METRICS = tuple(name for name, spec in METRICS.items() if spec.headline)
CONFIDENCE_METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            name="window_ce",
            quantity="window loss",
            variant="mean cross-entropy",
            kind="confidence",
            headline=False,
            expected=0,
            definition="mean cross-entropy (nats) of the model on the answer window it read",
        ),
        MetricSpec(
            name="window_entropy",
            quantity="predictive entropy",
            variant="mean over the window",
            kind="confidence",
            headline=False,
            expected=0,
            definition="mean entropy (nats) of the model's next-token distribution over the window",
        ),
    )
}


def metric_definitions() -> pd.DataFrame:
    """One row per metric: the table of definitions the report shows."""
    return pd.DataFrame([vars(spec) for spec in METRICS.values()])
