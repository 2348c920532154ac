"""The report's figures: one function per figure, each writing one PNG, its caption beside it.

The modules, by concept:

- `style`: the common look (seaborn styling inside a context manager, so the caller's
  rcParams stay as they were), report width, role colours, atomic PNG writing;
- `edges`: per-edge relative change of the mean |w| (the paper's Figure 2), one figure
  per pair x dataset with one panel per alpha on a shared colour scale; the distribution
  of log10 |w| over real edges of both roles;
- `metrics`: each headline metric against alpha (mean with a 95% t-interval), the
  cross-sample diversity (Figure 3a), per-node out-edge entropy (Figure 3b), and the
  per-sample change of log intensity against the change of the window's cross-entropy;
- `pair`: every figure of one pair (`make_pair_figures`) and their captions;
- `training`: per-step training logs of a model the workflow trained;
- `weights`: the relative update norm per layer x module kind, and each layer's update
  beside the intensity change on its edges;
- `faithfulness`: EAP scores against full ablations, and the top-k against random-k curve;
- `dynamics`: what each RL run's trainer logged (Figure 4) and accuracy and each tracked
  metric's change along training (Figure 5).

The figures take their formatting from `circuitry.display` only, never from the
report that shows them. This file imports nothing, so each module loads on its own.
"""
