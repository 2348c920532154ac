"""The HTML report: builders turn the study's outputs into blocks, rendered into one file.

The modules, by concept:

- `blocks`: the blocks a section holds (`Table`, `Figure`, `Text`, `Code`, `Details`,
  `Examples`) and `Section` itself;
- `summary`: the one-screen answer that opens the report, one line per pair;
- `calibration`: the known-answer pairs that prove the calibrated reading;
- `findings`: the headline verdicts (as the workflow wrote them) at each alpha and
  across alphas;
- `variants`: the metric definitions, their variants and every test;
- `confidence`: controls, seed replicates and the crossed design;
- `methods`: the methods text, the sample funnel, models, datasets and provenance;
- `dynamics`: the training-dynamics section;
- `faithfulness`: the faithfulness section (EAP against full ablations);
- `weights`: where the weights changed, beside the published ranges and the circuit;
- `sections`: the sections in order, the detail folded (`build_sections`);
- `render`: the jinja2 template filled into `report.html` (`write_report`).

Builders take data, not paths, so tests feed them known numbers; numbers are formatted
by `circuitry.display`, which the figures share.
"""
