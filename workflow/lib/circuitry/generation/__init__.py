"""Answers and their pairing (rules/generation.smk, rules/pairs.smk).

- `resumable`: every problem answered greedily in resumable batches, and the
  teacher-forcing check of those answers;
- `decoding`: which tokens a completion is, and the two backends that write them;
- `imported`: answers generated elsewhere, checked token for token and imported;
- `records`: the record beside every generation file (grades, agreement, provenance);
- `pairing`: two models' graded answers joined, and the comparable samples kept.
"""
