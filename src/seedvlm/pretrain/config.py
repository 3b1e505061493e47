"""PretrainConfig: how the base VLM is built on the embedded world, stage by stage (as LLaVA is trained)."""

from __future__ import annotations

from dataclasses import dataclass

from seedvlm.choices import Degradation, values
from seedvlm.config import field_
from seedvlm.errors import SeedVLMError

DEGRADE_KINDS = values(Degradation)  # stage 1's degraded views (seedvlm.pretrain.levers)


@dataclass
class PretrainConfig:
    world: str = field_("", "world folder written by `seedvlm world` (instances/captions/instruct JSON + images)")
    preset: str = field_("tiny", "model preset: tiny or small (the defaults below are the shipped tiny base's recipe)")
    init: str = field_("", "start from this llava-hf checkpoint (and its processor) instead of random weights; "
                           "stages with 0 steps/epochs are skipped")
    out: str = field_("runs/base", "output folder: a llava-hf checkpoint + processor + readiness.json")
    seed: int = field_(0, "seed for initialization, data order and the vision corpus")
    device: str = field_("auto", "auto | cpu | cuda")
    threads: int = field_(0, "torch CPU threads (0 = torch's default)")
    init_vision: str = field_("", "take the vision tower from this llava-hf checkpoint (same image size) and start "
                                  "the projector afresh; stage 2 then trains the projector alone (LLaVA's alignment)")
    # Stage 0: the language model alone, on text: each image replaced by its object list (LLaVA starts from an LM).
    text_steps: int = field_(6000, "stage 0 steps: language pretraining on instruct turns with the image given as text "
                                    "(0 = skip)")
    text_lr: float = field_(1e-3, "stage 0 peak learning rate")
    text_batch: int = field_(128, "stage 0 batch size")
    text_drop: float = field_(0.4, "stage 0: each object is left out of its image's text with this probability "
                                   "(perception noise, so the LM learns to weigh co-occurrence; answers stay true)")
    # Stage 1: the vision tower alone, multi-label object classification on unpaired scenes.
    vision_steps: int = field_(1500, "stage 1 steps (vision tower + per-patch linear head, multi-label BCE)")
    vision_batch: int = field_(128, "stage 1 batch size")
    vision_lr: float = field_(1e-3, "stage 1 peak learning rate (AdamW, cosine)")
    vision_head: str = field_("words", "stage 1 head: words (cosine to the category words' embeddings through the "
                                        "projector, CLIP-like) or linear (a linear head on the tower's patches)")
    vision_words: str = field_("auto", "words head: frozen (align vision to the LM's word embeddings), trained (learn "
                                       "both), auto (frozen when the LM was pretrained: text_steps > 0 or init)")
    vision_pool: int = field_(30000, "stage 1 corpus size: uniform-category scenes rendered once, reused")
    vision_degrade: float = field_(0.0, "stage 1: share of each batch shown degraded (vision_degrade_kinds), its "
                                        "targets cut to the objects still visible (0 = off, the shipped recipe)")
    vision_degrade_kinds: list[str] = field_(["noise", "mask", "blank"], "stage 1 degradations: noise (Gaussian, a "
                                             "uniform in [0.02, 1)), mask (25-75% of the patches), blank")
    vision_visible_snr: float = field_(3.0, "stage 1: under noise an object stays a target while sqrt(visible pixels "
                                            "* a / (1 - a)) reaches this")
    # Stage 2: projector alignment + language on captions and descriptions, tower frozen, features cached.
    align_epochs: float = field_(3.0, "stage 2 epochs over the world's captions + detailed descriptions")
    align_lr: float = field_(2e-3, "stage 2 peak learning rate")
    # Stage 3: instruction tuning on all instruct turns, loss averaged per sample so short answers count.
    instruct_epochs: float = field_(5.0, "stage 3 epochs over all instruct turns (descriptions and QA)")
    instruct_lr: float = field_(1e-3, "stage 3 peak learning rate")
    uninformative: float = field_(0.0, "stages 2-3: share of the samples whose image is replaced by a blank or pure-"
                                       "noise one, the text kept, so the LM learns to answer from its prior when it "
                                       "cannot see (0 = off, the shipped recipe)")
    uninformative_images: int = field_(16, "stages 2-3: uninformative images to draw from (one blank, the rest noise)")
    noisy_views: float = field_(0.0, "stages 2-3: share of the samples shown their own image under Gaussian noise "
                                     "(a drawn per image from noisy_alpha), the text kept, so the LM learns what a "
                                     "partly visible scene implies (0 = off, the shipped recipe)")
    noisy_alpha: list[float] = field_([0.1, 0.6], "stages 2-3: the range [low, high] of a for the noisy views "
                                                  "(x' = sqrt(a) x + sqrt(1 - a) eps; one view per image, drawn once)")
    batch_size: int = field_(32, "stage 2/3 batch size")
    warmup_fraction: float = field_(0.05, "linear warm-up as a fraction of each stage's steps")
    weight_decay: float = field_(0.01, "AdamW weight decay")
    # Readiness check on val.
    readiness_images: int = field_(200, "val images used by the readiness check (0 = skip)")
    max_new_tokens: int = field_(128, "generation length for the readiness descriptions")
    save_dtype: str = field_("float16", "dtype of the saved weights (float16 keeps the shipped tiny base small)")

    def __post_init__(self) -> None:
        checks = [(0.0 <= self.vision_degrade <= 1.0, "vision_degrade must be in [0, 1]"),
                  (bool(self.vision_degrade_kinds) and set(self.vision_degrade_kinds) <= set(DEGRADE_KINDS),
                   f"vision_degrade_kinds must name some of {list(DEGRADE_KINDS)}"),
                  (self.vision_visible_snr > 0, "vision_visible_snr must be positive"),
                  (0.0 <= self.uninformative <= 1.0, "uninformative must be in [0, 1]"),
                  (self.uninformative_images >= 1, "uninformative_images must be >= 1"),
                  (0.0 <= self.noisy_views <= 1.0, "noisy_views must be in [0, 1]"),
                  (len(self.noisy_alpha) == 2 and 0.0 <= self.noisy_alpha[0] <= self.noisy_alpha[1] <= 1.0,
                   "noisy_alpha must be two numbers 0 <= low <= high <= 1")]
        for ok, msg in checks:
            if not ok:
                raise SeedVLMError(f"bad pretrain config: {msg}")
