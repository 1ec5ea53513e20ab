"""ReHyAt checkpoints: the diffusers layout, the feature-map adapter layout, and the offline base loader.

Two layouts, one loader (:meth:`rehyat.wan.ReHyAtWanTransformer3DModel.from_pretrained`, of which
:func:`load_rehyat` is a thin alias):

* **diffusers layout** (``model.save_pretrained(dir)``; :func:`save_rehyat` with ``full_weights=True``):
  ``config.json`` (``_class_name: ReHyAtWanTransformer3DModel`` and the ``rehyat`` entry) + safetensors weights,
  sharded for big models.  Self-contained; a pipeline folder holds it under ``transformer/``.
* **feature-map adapter layout** (:func:`save_rehyat`, the default; what stage 1 exports), like a LoRA adapter::

      rehyat_config.json          # format, ReHyAt config, base reference, base transformer config, weight kind
      rehyat_weights.safetensors  # phi_q / phi_k of every converted block ("feature_maps"), or the whole
                                  # converted transformer ("full", written by earlier versions)

  Small (phi only), loaded on top of the base Wan transformer: a local folder with the layout of
  ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (``transformer/config.json`` + weights; a bare transformer folder works too).

Nothing is ever downloaded; a missing base raises :class:`BaseCheckpointNotFoundError` saying what to fetch and where
to put it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from rehyat.config import ReHyAtConfig

from .convert import feature_map_state_dict, get_rehyat_config, rehyat_processors

FORMAT = "rehyat-wan"
FORMAT_VERSION = 1
CONFIG_NAME = LEGACY_CONFIG_NAME = "rehyat_config.json"
WEIGHTS_NAME = "rehyat_weights.safetensors"
BASE_ENV = "REHYAT_WAN_BASE"
DEFAULT_BASE_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
# Keys of the transformer config that must agree between the base and the checkpoint.
_ARCH_KEYS = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
              "ffn_dim", "num_layers", "image_dim", "added_kv_proj_dim")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class BaseCheckpointNotFoundError(FileNotFoundError):
    """The base Wan checkpoint a ReHyAt model is loaded on top of is not on disk."""


def _missing_base_message(where: str, why: str) -> str:
    return (
        f"Base Wan checkpoint not found: {why}.\n"
        f"ReHyAt loads its feature maps on top of a base Wan2.1 model in a local diffusers folder and never downloads "
        f"anything by itself. Download `{DEFAULT_BASE_REPO}` once on a machine with internet access, e.g.\n"
        f"    hf download {DEFAULT_BASE_REPO} --local-dir {where}\n"
        f"(the folder must hold model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/), then "
        f"pass it as base_model=... / --base PATH or set ${BASE_ENV}."
    )


def missing_model_error(folder: str | os.PathLike, what: str) -> BaseCheckpointNotFoundError:
    """The error for a model folder that is not on disk (or lacks its config): what was expected, where a Wan model
    comes from and how to convert it."""
    folder = Path(folder)
    why = f"{folder} does not exist" if not folder.exists() else f"{folder} has no config.json"
    return BaseCheckpointNotFoundError(
        f"{why}: expected {what}. Nothing is downloaded at run time. Get a dense Wan model on a machine with internet "
        f"access (`hf download {DEFAULT_BASE_REPO} --local-dir /path/to/Wan2.1-T2V-1.3B-Diffusers`), then convert it "
        f"(`python -m rehyat.convert --model /path/to/Wan2.1-T2V-1.3B-Diffusers --preset paper-main --out {folder}`).")


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir())


def resolve_base_transformer(base: str | os.PathLike | None) -> tuple[Path, str | None]:
    """``(folder, subfolder)`` of a base Wan transformer, or :class:`BaseCheckpointNotFoundError`."""
    if base is None:
        raise BaseCheckpointNotFoundError(_missing_base_message(
            "/path/to/Wan2.1-T2V-1.3B-Diffusers", f"no base folder given (argument, checkpoint or ${BASE_ENV})"))
    base = Path(base).expanduser()
    if not base.exists():
        raise BaseCheckpointNotFoundError(_missing_base_message(str(base), f"{base} does not exist"))
    if (base / "transformer" / "config.json").is_file():
        if not _has_weights(base / "transformer"):
            raise BaseCheckpointNotFoundError(_missing_base_message(
                str(base), f"{base / 'transformer'} has a config.json but no weight files (*.safetensors)"))
        return base, "transformer"
    if (base / "config.json").is_file() and _has_weights(base):
        cls = json.loads((base / "config.json").read_text()).get("_class_name")
        if cls == "WanTransformer3DModel":
            return base, None
    raise BaseCheckpointNotFoundError(_missing_base_message(
        str(base), f"{base} holds no transformer/config.json with weights (not a diffusers Wan folder)"))


def load_base_transformer(base: str | os.PathLike | None, torch_dtype: torch.dtype | None = None,
                          subfolder: str | None = None) -> WanTransformer3DModel:
    """The plain (softmax) Wan transformer of a local diffusers folder; offline only.

    ``subfolder`` picks another transformer of a pipeline folder (Wan2.2 A14B: ``transformer_2``)."""
    if subfolder:
        folder, sub = Path(base).expanduser(), subfolder
        if not _has_weights(folder / sub) or not (folder / sub / "config.json").is_file():
            raise BaseCheckpointNotFoundError(_missing_base_message(
                str(folder), f"{folder / sub} holds no config.json with weights"))
    else:
        folder, sub = resolve_base_transformer(base)
    kw = {"subfolder": sub} if sub else {}
    return WanTransformer3DModel.from_pretrained(folder, torch_dtype=torch_dtype, local_files_only=True, **kw)


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def save_rehyat(transformer, out_dir: str | os.PathLike, *, base_model: str | os.PathLike | None = None,
                full_weights: bool = False, base_subfolder: str | None = None) -> Path:
    """Write a ReHyAt checkpoint of a converted transformer into ``out_dir``.

    Default: the feature-map adapter layout (phi only, on top of ``base_model``: the base Wan folder to record; a path
    relative to ``out_dir`` stays relative, so a checkpoint inside or next to its base can be moved together with it).
    ``base_subfolder``: the transformer of the base pipeline folder the phi belong to (Wan2.2 A14B's
    ``transformer_2``).  ``full_weights=True``: every parameter, in the diffusers layout
    (``transformer.save_pretrained(out_dir)``; needed once the base weights were fine-tuned; no base is needed to load
    it).  Both load with :func:`load_rehyat`.
    """
    cfg = get_rehyat_config(transformer)
    if full_weights:
        transformer.save_pretrained(out_dir, safe_serialization=True)
        return Path(out_dir)
    procs = rehyat_processors(transformer)
    if any(p.feature_map != cfg.feature_map for p in procs.values()):
        raise ValueError("processors disagree with transformer.rehyat_config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = transformer.state_dict() if full_weights else feature_map_state_dict(transformer)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rehyat": cfg.to_dict(),
        "feature_map_config": next(iter(procs.values())).phi_q.config() if procs else None,
        "weights": "full" if full_weights else "feature_maps",
        "base_model": None if base_model is None else str(base_model),
        # which transformer of the base pipeline folder (Wan2.2 A14B: "transformer_2"); None = the usual one
        "base_subfolder": base_subfolder,
        "base_transformer_config": _jsonable({k: v for k, v in dict(transformer.config).items()
                                             if k != "_name_or_path"}),
        "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", "") if tensors else None,
    }
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", "rehyat_format": FORMAT})
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def read_rehyat_config(path: str | os.PathLike) -> dict:
    p = Path(path) / CONFIG_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{path} is not a ReHyAt checkpoint (no {CONFIG_NAME})")
    meta = json.loads(p.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p}: unknown format {meta.get('format')!r} (expected {FORMAT!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{p}: format_version {meta['format_version']} is newer than this code ({FORMAT_VERSION})")
    return meta


def is_rehyat_checkpoint(path: str | os.PathLike) -> bool:
    """A ReHyAt transformer folder of either layout (adapter ``rehyat_config.json``, or a diffusers ``config.json``
    with the ``rehyat`` entry)."""
    p = Path(path)
    if (p / CONFIG_NAME).is_file():
        return True
    cfg = p / "config.json"
    try:
        return cfg.is_file() and "rehyat" in json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False


def is_adapter_checkpoint(path: str | os.PathLike) -> bool:
    """The feature-map adapter layout (``rehyat_config.json``), loaded on top of a base Wan folder."""
    return (Path(path) / CONFIG_NAME).is_file()


def resolve_base_model(path: str | os.PathLike, base_model: str | os.PathLike | None = None) -> Path | None:
    """Base folder of a checkpoint: the argument, else the one recorded (relative to the checkpoint), else
    ``$REHYAT_WAN_BASE``; ``None`` if none is known."""
    if base_model is not None:
        return Path(base_model).expanduser()
    rec = read_rehyat_config(path).get("base_model")
    if rec:
        p = Path(rec).expanduser()
        return p if p.is_absolute() else (Path(path) / p)
    env = os.environ.get(BASE_ENV)
    return Path(env).expanduser() if env else None


def _check_arch(base_cfg: dict, saved_cfg: dict, where: str) -> None:
    bad = {k: (base_cfg.get(k), saved_cfg.get(k)) for k in _ARCH_KEYS
           if _jsonable(base_cfg.get(k)) != _jsonable(saved_cfg.get(k))}
    if bad:
        raise ValueError(f"base transformer at {where} does not match the checkpoint's architecture: "
                         + ", ".join(f"{k}: base {a} vs checkpoint {b}" for k, (a, b) in bad.items()))


def load_legacy_rehyat(path: str | os.PathLike, base_model: str | os.PathLike | None = None, *,
                       torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """Load the feature-map adapter layout: base Wan transformer (local) -> convert -> load phi.

    Checks that every ReHyAt tensor of the checkpoint is consumed and every converted block receives its weights.
    Called by :meth:`ReHyAtWanTransformer3DModel.from_pretrained` when the folder holds ``rehyat_config.json``.
    """
    from rehyat.wan.model import ReHyAtWanTransformer3DModel

    meta = read_rehyat_config(path)
    if meta["weights"] == "full":
        transformer = WanTransformer3DModel.from_config(meta["base_transformer_config"])
        if torch_dtype is not None:
            transformer = transformer.to(torch_dtype)
    else:
        base = resolve_base_model(path, base_model)
        transformer = load_base_transformer(base, torch_dtype=torch_dtype, subfolder=meta.get("base_subfolder"))
        _check_arch(dict(transformer.config), meta["base_transformer_config"], str(base))
    rc = ReHyAtConfig.from_dict(meta["rehyat"])  # configs written before a field existed get its default
    ReHyAtWanTransformer3DModel.from_wan(transformer, rc, seed=0)
    state = load_file(str(Path(path) / WEIGHTS_NAME))
    expected = set(feature_map_state_dict(transformer))
    if meta["weights"] == "full":
        transformer.load_state_dict(state, strict=True)
    else:
        got = set(state)
        if got != expected:
            raise ValueError(f"{path}: feature-map weights do not match the converted blocks; missing "
                             f"{sorted(expected - got)[:5]}, unexpected {sorted(got - expected)[:5]}")
        transformer.load_state_dict(state, strict=False)
    transformer.eval()
    if device is not None:
        transformer.to(device)
    return transformer


def load_rehyat(path: str | os.PathLike, base_model: str | os.PathLike | None = None, *,
                torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """Thin alias: ``ReHyAtWanTransformer3DModel.from_pretrained(path, base_model=..., torch_dtype=...)`` (either
    layout), moved to ``device``."""
    from rehyat.wan.model import ReHyAtWanTransformer3DModel

    model = ReHyAtWanTransformer3DModel.from_pretrained(path, base_model=base_model, torch_dtype=torch_dtype)
    model.eval()
    return model.to(device) if device is not None else model
