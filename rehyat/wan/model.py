"""``ReHyAtWanTransformer3DModel``: a diffusers Wan transformer whose config carries ReHyAt.

The class reports its module as ``rehyat.modeling_wan`` (a two-line re-export): ``pipe.save_pretrained`` records a
component's library from its class's module path, and diffusers reads any path of the form ``<x>.wan.<y>`` as its own
``diffusers.pipelines.wan`` (``WanPipeline.from_pretrained`` would then look for the class there and fail).  A
two-part path is recorded as is and imported on load.

A subclass of diffusers' ``WanTransformer3DModel`` (Wan2.1 T2V/I2V, Wan2.2 TI2V-5B and the A14B pair all use that
class) with one more config entry, ``rehyat`` (a :class:`~rehyat.config.ReHyAtConfig` as a dict, blocks resolved).
So everything diffusers does with models works unchanged:

* ``model.save_pretrained(dir)`` / ``ReHyAtWanTransformer3DModel.from_pretrained(dir)`` round-trip (safetensors,
  sharded files, ``torch_dtype=``, ``device_map=``); phi_q / phi_k are ordinary parameters
  (``blocks.{i}.attn1.processor.phi_q.*``);
* a pipeline folder whose ``model_index.json`` names ``["rehyat.modeling_wan", "ReHyAtWanTransformer3DModel"]``
  loads with ``WanPipeline.from_pretrained(folder)`` (diffusers imports the class by its module path);
* gradient checkpointing, CPU offload hooks, LoRA (``PeftAdapterMixin``) come from the base class.

:meth:`ReHyAtWanTransformer3DModel.from_wan` converts a dense model (an instance, in place, or a local folder);
:meth:`~ReHyAtWanTransformer3DModel.to_wan` reverts.  ``from_pretrained`` also reads the older ReHyAt layout
(``rehyat_config.json`` + ``rehyat_weights.safetensors`` on top of a base Wan folder, written by
:func:`rehyat.wan.checkpoint.save_rehyat`), so there is one loader.

Modes: ``"parallel"`` (diffusers' forward; every converted block runs its kind on the whole sequence) and
``"recurrent"`` (:func:`rehyat.wan.recurrent.recurrent_forward`, chunk by chunk in constant memory; all blocks
converted, causal).  Select with :meth:`set_rehyat_mode` or the :func:`rehyat.wan.rehyat_mode` context manager.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable

import torch
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import FrozenDict, register_to_config
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanRotaryPosEmbed

from rehyat.config import ReHyAtConfig

from .processor import FrameRotaryPosEmbed, ReHyAtWanAttnProcessor

MODES = ("parallel", "recurrent")
CONFIG_KEY = "rehyat"


def _swap_rope(model, cls) -> None:
    """Replace ``model.rope`` by an instance of ``cls`` holding the very same (fp32, non-persistent) tables."""
    old = model.rope
    with torch.device("meta"):
        new = cls(old.attention_head_dim, old.patch_size, old.max_seq_len)
    new.register_buffer("freqs_cos", old.freqs_cos, persistent=False)
    new.register_buffer("freqs_sin", old.freqs_sin, persistent=False)
    model.rope = new


class ReHyAtWanTransformer3DModel(WanTransformer3DModel):
    """``WanTransformer3DModel`` with ReHyAt self-attention on ``config.rehyat["blocks"]``.  See the module docs.

    Construct it with every ``WanTransformer3DModel`` argument plus ``rehyat=`` (a ReHyAtConfig or its dict), or —
    the usual way — with :meth:`from_wan` / :meth:`from_pretrained`.
    """

    __module__ = "rehyat.modeling_wan"  # see the module docstring: what model_index.json records and imports

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        rehyat: dict | ReHyAtConfig | None = None,
    ) -> None:
        super().__init__(patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim,
                         freq_dim, ffn_dim, num_layers, cross_attn_norm, qk_norm, eps, image_dim, added_kv_proj_dim,
                         rope_max_seq_len, pos_embed_seq_len)
        self._install(ReHyAtConfig.from_dict(rehyat) if rehyat is not None else ReHyAtConfig(), seed=None)

    # ------------------------------------------------------------------------------------------------ conversion
    def _install(self, config: ReHyAtConfig, seed: int | None) -> None:
        """Processors on ``attn1`` of the configured blocks (phi freshly initialised on each block's device and
        dtype; ``seed`` makes that deterministic without touching the global RNG), the geometry-carrying RoPE, the
        config entry and the mode."""
        config = config.resolved(len(self.blocks))
        _swap_rope(self, FrameRotaryPosEmbed)
        rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng:
            if seed is not None:
                torch.manual_seed(seed)
            for i in config.blocks:
                attn = self.blocks[i].attn1
                w = attn.to_q.weight
                proc = ReHyAtWanAttnProcessor(attn.heads, attn.inner_dim // attn.heads, config)
                attn.set_processor(proc.to(device=w.device, dtype=w.dtype))
        self.register_to_config(**{CONFIG_KEY: config.to_dict()})
        self._rehyat_config = config  # the object every processor holds too
        self._rehyat_mode = "parallel"

    @classmethod
    def from_wan(cls, transformer_or_folder, config: ReHyAtConfig | dict | str | None = None, *,
                 seed: int | None = None, torch_dtype: torch.dtype | None = None, subfolder: str | None = None,
                 **fields) -> "ReHyAtWanTransformer3DModel":
        """A ReHyAt model from a dense Wan transformer.

        ``transformer_or_folder``: a ``WanTransformer3DModel`` — converted **in place** (no weight copy, so a 14B
        model fits once; ``copy.deepcopy`` it first to keep a dense copy) and returned — or a local diffusers
        folder (a pipeline folder with ``transformer/``, or a bare transformer folder; ``subfolder`` picks e.g.
        ``transformer_2``), loaded offline.  ``config``: a :class:`ReHyAtConfig`, its dict, or a preset name;
        ``**fields`` (``chunk_frames=``, ``overlap_frames=``, ``causal=``, ``blocks=``, ...) override it.
        """
        if isinstance(config, str):
            config = ReHyAtConfig.from_preset(config)
        cfg = ReHyAtConfig.from_dict(config).replace(**fields)
        if isinstance(transformer_or_folder, (str, os.PathLike)):
            from .checkpoint import load_base_transformer

            transformer = load_base_transformer(transformer_or_folder, torch_dtype=torch_dtype, subfolder=subfolder)
        else:
            transformer = transformer_or_folder
        if isinstance(transformer, ReHyAtWanTransformer3DModel):
            raise ValueError("transformer is already ReHyAt-converted")
        if type(transformer) is not WanTransformer3DModel:
            raise TypeError(f"expected a diffusers WanTransformer3DModel, got {type(transformer).__name__}")
        transformer.__class__ = cls  # the subclass adds no module of its own beyond what _install puts in place
        transformer._install(cfg, seed)
        return transformer

    def to_wan(self) -> WanTransformer3DModel:
        """Undo the conversion in place: diffusers' dense ``WanAttnProcessor`` everywhere, plain RoPE, no ``rehyat``
        config entry (the feature maps are dropped).  Returns the (same) object as a ``WanTransformer3DModel``."""
        for i in self.rehyat_config.blocks:
            self.blocks[i].attn1.set_processor(WanAttnProcessor())
        _swap_rope(self, WanRotaryPosEmbed)
        self._internal_dict = FrozenDict({k: v for k, v in self._internal_dict.items() if k != CONFIG_KEY})
        for name in ("_rehyat_mode", "_rehyat_config"):
            self.__dict__.pop(name, None)
        self.__class__ = WanTransformer3DModel
        return self

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def rehyat_config(self) -> ReHyAtConfig:
        """The one config object of this model (blocks resolved to indices); its processors hold the same object."""
        return self._rehyat_config

    def rehyat_processors(self) -> dict[int, ReHyAtWanAttnProcessor]:
        """``{block index: processor}`` of the converted blocks."""
        return {i: self.blocks[i].attn1.processor for i in self.rehyat_config.blocks}

    def recurrent_unsupported_reason(self) -> str | None:
        """Why the constant-memory recurrent forward cannot run on this model (``None`` if it can)."""
        cfg = self.rehyat_config
        missing = sorted(set(range(len(self.blocks))) - set(cfg.blocks))
        if missing:
            return (f"blocks {missing} keep dense softmax attention; the recurrent (constant-memory) form needs every "
                    f"block converted (the 'long-video' preset) — partially converted models run in parallel mode")
        if cfg.kind not in ("hybrid", "hybrid_recurrent"):
            return f"attention kind {cfg.kind!r} has no recurrent form (only 'hybrid' does)"
        if not cfg.attention_kind.effective_causal(cfg.causal):
            return ("the model is bidirectional (causal=False); the recurrent form exists only for causal models "
                    "(convert with causal=True, e.g. the 'long-video' preset)")
        return None

    @property
    def rehyat_mode(self) -> str:
        return self._rehyat_mode

    def set_rehyat_mode(self, mode: str) -> None:
        """``"parallel"`` (diffusers' forward with the converted processors) or ``"recurrent"`` (chunk-wise sweep)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "recurrent":
            reason = self.recurrent_unsupported_reason()
            if reason:
                raise ValueError(f"recurrent mode unavailable: {reason}")
        self._rehyat_mode = mode

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                return_dict: bool = True, attention_kwargs=None):
        """``WanTransformer3DModel.forward`` (parallel mode) or :func:`rehyat.wan.recurrent.recurrent_forward`."""
        if self._rehyat_mode == "recurrent":
            from .recurrent import recurrent_forward

            return recurrent_forward(self, hidden_states, timestep, encoder_hidden_states,
                                     encoder_hidden_states_image=encoder_hidden_states_image,
                                     return_dict=return_dict, attention_kwargs=attention_kwargs)
        return super().forward(hidden_states, timestep, encoder_hidden_states,
                               encoder_hidden_states_image=encoder_hidden_states_image, return_dict=return_dict,
                               attention_kwargs=attention_kwargs)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, base_model=None, **kwargs):
        """diffusers' ``from_pretrained`` (offline: ``local_files_only`` defaults to ``True``), plus the older
        ReHyAt checkpoint layout (``rehyat_config.json``; ``base_model=`` or the recorded base supplies the dense
        weights of a feature-maps-only checkpoint).  A dense Wan folder is refused with a pointer to
        :meth:`from_wan`."""
        from .checkpoint import LEGACY_CONFIG_NAME, load_legacy_rehyat, missing_model_error

        kwargs.setdefault("local_files_only", True)
        root = Path(os.fspath(pretrained_model_name_or_path)).expanduser()
        folder = root / kwargs["subfolder"] if kwargs.get("subfolder") else root
        if (folder / LEGACY_CONFIG_NAME).is_file():
            return load_legacy_rehyat(folder, base_model, torch_dtype=kwargs.get("torch_dtype"),
                                      device=kwargs.get("device_map") if isinstance(kwargs.get("device_map"),
                                                                                    (str, torch.device)) else None)
        if kwargs["local_files_only"] and not (folder / "config.json").is_file():
            raise missing_model_error(folder, "a ReHyAt Wan transformer folder (config.json + weights, written by "
                                              "save_pretrained)")
        if (folder / "config.json").is_file():
            cfg = json.loads((folder / "config.json").read_text())
            if CONFIG_KEY not in cfg and cfg.get("_class_name") == "WanTransformer3DModel":
                raise ValueError(f"{folder} holds a dense WanTransformer3DModel; convert it with "
                                 f"ReHyAtWanTransformer3DModel.from_wan({str(root)!r}, ...) (or "
                                 f"`python -m rehyat.convert --model {root} --preset paper-main --out DIR`)")
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model._rehyat_mode = "parallel"
        return model


def is_rehyat(transformer) -> bool:
    return isinstance(transformer, ReHyAtWanTransformer3DModel)


def convert_pipeline(pipe, config: ReHyAtConfig | dict | str | None = None, *, seed: int | None = None,
                     components: Iterable[str] = ("transformer", "transformer_2"), **fields):
    """Convert every Wan transformer of a ``WanPipeline`` in place (Wan2.2 A14B: ``transformer`` and
    ``transformer_2``, each with the same config, each with its own phi), re-registering them so that
    ``pipe.save_pretrained`` names the ReHyAt class in ``model_index.json``.  Returns ``pipe``."""
    done = {}
    for j, name in enumerate(components):
        t = getattr(pipe, name, None)
        if t is None:
            continue
        done[name] = ReHyAtWanTransformer3DModel.from_wan(t, config, seed=None if seed is None else seed + j,
                                                          **fields)
    pipe.register_modules(**done)
    return pipe
