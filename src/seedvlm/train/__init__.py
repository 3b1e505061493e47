"""SEED training and the SFT control arm on `transformers.Trainer`: config (SeedConfig), trainer, run setup,
checkpoints, FSDP plumbing, callbacks, LoRA.

Import the parts from their modules (`seedvlm.train.config`, `seedvlm.train.run`, ...); this package import stays
light so `seedvlm --help` is fast.
"""
