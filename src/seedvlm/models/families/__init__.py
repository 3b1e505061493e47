"""Model families the project knows (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL/Qwen2.5-VL, SmolVLM): one module each
describing it, a registry choosing one from a folder's config.json, and family-aware loading, token accounting and
pixel perturbation."""

from seedvlm.models.families.base import Family
from seedvlm.models.families.registry import FAMILIES, detect_family, family_for_config, get_family

__all__ = ["FAMILIES", "Family", "detect_family", "family_for_config", "get_family"]
