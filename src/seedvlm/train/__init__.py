"""SEED training and the SFT control arm on `transformers.Trainer`: config, trainer, callbacks, LoRA, merging.

Import the heavy parts from their modules (`seedvlm.train.trainer`, `seedvlm.train.lora`); this package import
stays light so `seedvlm --help` is fast.
"""

from seedvlm.train.config import TrainConfig

__all__ = ["TrainConfig"]
