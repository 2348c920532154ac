"""The data stage (rules/data.smk): benchmarks, their prompts and their grading.

- `benchmarks`: load a benchmark from its source (hub, URL, local JSON lines, toy) and
  normalise it to one schema;
- `toy`: the synthetic arithmetic problems that stand in for GSM8K, MATH and College Math;
- `prompts`: the text a model is given for a problem, and the token ids it sees;
- `answers`: final-answer extraction (LaTeX boxes, GSM8K markers);
- `grading`: a completion's final answer compared with the reference by `math-verify`.
"""
