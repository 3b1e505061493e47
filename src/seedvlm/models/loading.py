"""Loading and saving llava-hf checkpoints and peft adapters from local folders only (safetensors, no remote code).

Every folder the project writes loads with `LlavaForConditionalGeneration.from_pretrained` and
`AutoProcessor.from_pretrained` under HF_HUB_OFFLINE=1; errors name the folder and what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoProcessor, LlavaConfig, LlavaForConditionalGeneration
from transformers.utils import logging as hf_logging

from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path, read_json
from seedvlm.models.fingerprint import FORMAT as FINGERPRINT_FORMAT
from seedvlm.models.fingerprint import base_fingerprint, legacy_fingerprint

log = logging.getLogger(__name__)

BASE_FINGERPRINT_FILE = "seedvlm_base.json"
MERGE_FILE = "seedvlm_merge.json"
# from_pretrained settings for every weight folder: local files only, safetensors only, no remote code, and none of
# transformers' hub kernels (they are fetched from the Hub at load time, which fails offline, and change numerics)
OFFLINE_WEIGHTS = {"local_files_only": True, "use_safetensors": True, "trust_remote_code": False,
                   "use_kernels": False}


def _quiet_transformers() -> None:
    hf_logging.set_verbosity_error()


def check_model_dir(path: str | os.PathLike) -> Path:
    """A local llava-hf folder with config.json and safetensors weights, or a clear error naming what is wrong."""
    p = Path(path)
    if not p.exists():
        raise SeedVLMError(f"model folder not found: {p}")
    if not p.is_dir():
        raise SeedVLMError(f"model path is not a folder: {p}")
    if not (p / "config.json").is_file():
        raise SeedVLMError(f"no config.json in model folder {p}: expected a llava-hf checkpoint folder")
    cfg = read_json(p / "config.json", "model config")
    if cfg.get("model_type") != "llava":
        raise SeedVLMError(f"{p / 'config.json'}: model_type is {cfg.get('model_type')!r}, expected 'llava'")
    if not any(p.glob("*.safetensors")):
        raise SeedVLMError(f"no *.safetensors weights in {p} (only safetensors are loaded, never pickles)")
    return p


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`--device` as a torch device that exists here (default: cuda if available); a name torch does not know or
    a GPU that is not there is a one-line error, before any weights load."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SeedVLMError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SeedVLMError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise SeedVLMError(f"--device {device}: only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as e:
            raise SeedVLMError(f"--device {device}: {str(e).splitlines()[0]}; use cpu or cuda") from None
    return dev


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU (docs/design.md section 2)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(path: str | os.PathLike, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, attn_implementation: str | None = None
               ) -> LlavaForConditionalGeneration:
    """Load a llava-hf model offline from a local folder. attn_implementation: "sdpa", "eager",
    "flash_attention_2" or None (transformers' default, sdpa where available)."""
    p = check_model_dir(path)
    _quiet_transformers()
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = LlavaForConditionalGeneration.from_pretrained(
            p, dtype=dtype, **OFFLINE_WEIGHTS, **extra)
    except (OSError, ValueError, RuntimeError) as e:
        raise SeedVLMError(f"could not load model from {p}: {e}") from None
    return model.to(device)


def load_processor(path: str | os.PathLike):
    """Load the processor (tokenizer + image processor + chat template) saved beside a model. In a model folder,
    settings an older processor_config.json lacks are derived from config.json, and the processor is checked to
    feed the vision tower exactly (`seedvlm.models.folders`)."""
    from seedvlm.models.folders import check_processor, complete_processor

    p = Path(path)
    _quiet_transformers()
    try:
        processor = AutoProcessor.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        raise SeedVLMError(f"could not load a processor from {p}: {e}") from None
    if (p / "config.json").is_file():
        config = LlavaConfig.from_pretrained(p, local_files_only=True)
        derived = complete_processor(processor, config, p)
        if derived:
            log.info("%s: %s not in processor_config.json; derived from config.json", p, ", ".join(derived))
        check_processor(processor, config, p)
    return processor


def save_model(model, processor, out: str | os.PathLike, extra_files: dict[str, dict] | None = None) -> Path:
    """Write model + processor (+ small JSON files) atomically as one llava-hf folder."""
    out = Path(out)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if processor is not None:
            processor.save_pretrained(tmp)
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
    return out


def _check_not_merged(model_dir: str | os.PathLike | None, adapter: Path) -> None:
    """Refuse an adapter onto the folder `seedvlm merge` wrote from it (its update would count twice)."""
    if model_dir is None or not (Path(model_dir) / MERGE_FILE).is_file():
        return
    merged_from = read_json(Path(model_dir) / MERGE_FILE, "merge record").get("adapter")
    if merged_from and Path(merged_from).resolve() == adapter.resolve():
        raise SeedVLMError(f"{model_dir} already holds adapter {adapter} (see its {MERGE_FILE}); use the model "
                           f"without --adapter, or load the adapter onto its base")


def verify_adapter_base(model, adapter: str | os.PathLike, allow_unverified: bool = False,
                        model_dir: str | os.PathLike | None = None) -> None:
    """Check that `model` holds exactly the weights the adapter was trained on (its seedvlm_base.json).

    A mismatch (another base, the same base with an adapter merged in, another fine-tune) is an error. An adapter
    without the file loads only with allow_unverified (a warning says what went unchecked); an older file with the
    embeddings-only fingerprint loads when it matches, with a warning that a merged-in update cannot be seen."""
    a = Path(adapter)
    _check_not_merged(model_dir, a)
    fp_file = a / BASE_FINGERPRINT_FILE
    if not fp_file.is_file():
        what = (f"adapter {a} has no {BASE_FINGERPRINT_FILE}: could not check that this model is the base it was "
                f"trained on, nor that its update is not already merged into it")
        if not allow_unverified:
            raise SeedVLMError(f"{what}; pass --allow-unverified-adapter to load it anyway, or, if it was trained on "
                               f"this model, write {{\"fingerprint\": \"{base_fingerprint(model)}\"}} to {fp_file}")
        log.warning("%s (loaded anyway: --allow-unverified-adapter)", what)
        return
    want = read_json(fp_file, "adapter base fingerprint").get("fingerprint")
    if not isinstance(want, str) or not want:
        raise SeedVLMError(f"{fp_file}: no 'fingerprint' string")
    if want.startswith(f"{FINGERPRINT_FORMAT}-"):
        have = base_fingerprint(model)
        if want != have:
            raise SeedVLMError(
                f"adapter {a} was trained on a different base model (fingerprint {want}, this model {have}): "
                f"another base, another fine-tune, or this base with an adapter already merged in; load it onto the "
                f"model it was trained from")
        return
    have = legacy_fingerprint(model)
    if want != have:
        raise SeedVLMError(f"adapter {a} was trained on a different base model (fingerprint {want}, this base "
                           f"{have}); load it onto the model it was trained from")
    log.warning("adapter %s carries an older embeddings-only fingerprint: the base matches, but whether this "
                "model already has an adapter merged in could not be checked", a)


def attach_adapter(model, adapter: str | os.PathLike, is_trainable: bool = False, allow_unverified: bool = False,
                   model_dir: str | os.PathLike | None = None):
    """Wrap `model` with a peft LoRA adapter from a local folder, refusing an adapter made for other weights
    (`verify_adapter_base`)."""
    a = Path(adapter)
    if not (a / "adapter_config.json").is_file():
        raise SeedVLMError(f"not a peft adapter folder (no adapter_config.json): {a}")
    if not (a / "adapter_model.safetensors").is_file():
        raise SeedVLMError(f"no adapter_model.safetensors in adapter folder {a}")
    verify_adapter_base(model, a, allow_unverified, model_dir)
    try:
        with warnings.catch_warnings():  # peft reads a property transformers marks deprecated: not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return PeftModel.from_pretrained(model, a, is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise SeedVLMError(f"adapter {a} does not match this base model: {str(e).splitlines()[0]}") from None


def load_for_inference(model_path: str | os.PathLike, adapter: str | os.PathLike | None = None,
                       device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                       allow_unverified_adapter: bool = False):
    """(model, processor) ready for generation: eval mode, adapter attached if given (and verified)."""
    processor = load_processor(model_path)
    model = load_model(model_path, device=device, dtype=dtype)
    if adapter:
        model = attach_adapter(model, adapter, allow_unverified=allow_unverified_adapter, model_dir=model_path)
    model.eval()
    return model, processor


def random_model(config: LlavaConfig, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> LlavaForConditionalGeneration:
    """A randomly initialized model of a config (seeded), e.g. for benchmarks or as pretraining's start."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config)
    return model.to(dtype)
