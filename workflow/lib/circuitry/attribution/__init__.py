"""Edge attribution and its checks (rules/eap.smk, rules/faithfulness.smk, and the
model edits of rules/calibration.smk).

- `graph`: the residual computation graph of a decoder-only transformer;
- `architectures`: for each model family, the modules EAP hooks;
- `hooks`: where the forward nodes write and the backward nodes read (and layers
  checkpointed for long windows);
- `samples`: a prompt, its answer and the window of answer tokens the loss reads, and
  the samples of a pair file;
- `memory`: EAP's peak memory from the model's shape, the tokens and the readings;
- `window_loss`: that window's inputs, logits, losses and gradients;
- `eap`: Edge Attribution Patching, every edge in one forward and one backward pass;
- `scorefile`: the score file's writer and reader;
- `ablation`: edges removed outright, through the same hook points;
- `faithfulness`: EAP's scores against the loss change of those ablations;
- `edge_sample`: a random edge sample removed outright from both models of a pair, as
  score sets of true loss changes beside the same edges' EAP scores;
- `edits`: models changed in a known way at load time (the known-answer pairs).
"""
