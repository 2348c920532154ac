"""What the scores say (rules/analysis.smk, rules/calibration.smk, rules/dynamics.smk).

- `metrics`: what each circuit metric is (definitions, roles, headline metrics);
- `sample_metrics`, `pooled_metrics`: per-sample and pooled metrics of edge scores;
- `circuit_metrics`: every metric of one pair x dataset x alpha x loss;
- `paired_tests`: the paired tests of one metric, base vs tuned;
- `stats`: those tests over every condition, with FDR;
- `calibration`: the known-answer pairs, and whether each reading reads what is known;
- `verdicts`: what each headline change means once confidence is accounted for;
- `survival`: whether each headline change survives exact ablation of an edge sample;
- `fidelity`: where circuitry differs from the paper's code, and by how much;
- `dynamics`: accuracy and circuit metrics along RL runs;
- `weights`: the weight-space diff of a pair: unchanged fractions, update norms and ranks;
- `weight_table`: that diff's per-tensor table read without torch: its columns, names
  and summaries;
- `weight_join`: each layer's weight update beside the intensity change on its edges;
- `results`: the study's outputs loaded as the report reads them.
"""
