"""circuitry: how post-training changes the internal circuitry of language models.

Stage subpackages, mirroring workflow/rules/*.smk:

- `data`: benchmarks, prompts, grading;
- `models`: loading, training, RL runs;
- `generation`: answers, imported answers, pairing;
- `attribution`: EAP, its ablations and faithfulness, known-answer edits;
- `analysis`: metrics, tests, calibration, verdicts, dynamics, results;
- `figures`, `report`: the figures and the HTML report.

Plumbing every stage shares: `config` (the views of a config rules use),
`config_checks` (what makes a config invalid), `config_files` (the files as written),
`paths` (every output pattern), `io` (atomic writes, JSON lines), `logs`, `provenance`,
`reproducibility` (CPU code paths, rebuilt weights) and `display` (how numbers read in
figures and the report).
"""

__version__ = "0.1.0"
