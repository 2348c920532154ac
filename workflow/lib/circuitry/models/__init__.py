"""The models (rules/training.smk, and the loading every stage shares).

- `sources`: where a `models` entry's files come from (a directory, a hub commit), and
  the messages for missing or corrupt weights;
- `loading`: a `models` entry's weights and tokenizer loaded, and what identifies them;
- `files`: trained models on disk in save_pretrained layout, with their training log
  and recipe; adapters merged;
- `tokenizer`: the toy models' character-level tokenizer;
- `sft`: supervised fine-tuning, a plain PyTorch loop;
- `training`: the toy lineage (SFT, then GRPO and DPO with trl);
- `runs`: RL runs as checkpoints, from any source (planning: standard library only).
"""
