"""seedvlm: SEED self-evaluation distillation for LLaVA-family vision-language models.

Less object hallucination through LoRA distillation from a noise-contrastive purified teacher,
measured with POPE and CHAIR against the base model and plain LoRA SFT.
"""

__version__ = "0.1.0"

from seedvlm.errors import SeedVLMError  # noqa: E402

__all__ = ["SeedVLMError", "__version__"]
