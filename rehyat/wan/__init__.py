"""ReHyAt for diffusers' Wan models: the model class, its processor, conversion, checkpoints, the recurrent forward,
pipelines.  See docs/wan.md.

``ReHyAtWanTransformer3DModel`` is the model (a ``WanTransformer3DModel`` whose config carries a
:class:`~rehyat.config.ReHyAtConfig`); the functional helpers (``convert_wan_to_rehyat``, ``load_rehyat``,
``save_rehyat``, ``revert_to_softmax``, ...) are thin aliases kept for existing code.

Imports diffusers; ``rehyat`` itself, ``rehyat.config`` and ``rehyat.attention`` do not.
"""

from rehyat.config import PRESETS, ReHyAtConfig, get_preset, resolve_blocks

from .checkpoint import (BaseCheckpointNotFoundError, is_rehyat_checkpoint, load_base_transformer, load_rehyat,
                         read_rehyat_config, save_rehyat)
from .convert import (compile_rehyat, convert_wan_to_rehyat, feature_map_state_dict, get_rehyat_config,
                      get_rehyat_mode, recurrent_unsupported_reason, rehyat_mode, rehyat_processors, revert_to_softmax,
                      set_rehyat_mode)
from rehyat.wan.model import MODES, ReHyAtWanTransformer3DModel, convert_pipeline, is_rehyat
from .pipeline import load_pipeline
from .processor import FrameRotary, FrameRotaryPosEmbed, ReHyAtWanAttnProcessor, apply_wan_rotary_emb
from .recurrent import chunk_rotary_emb, recurrent_forward

__all__ = [
    "MODES", "PRESETS", "BaseCheckpointNotFoundError", "FrameRotary", "FrameRotaryPosEmbed", "ReHyAtConfig",
    "ReHyAtWanAttnProcessor", "ReHyAtWanTransformer3DModel", "apply_wan_rotary_emb", "chunk_rotary_emb",
    "compile_rehyat", "convert_pipeline", "convert_wan_to_rehyat", "feature_map_state_dict", "get_preset",
    "get_rehyat_config", "get_rehyat_mode", "is_rehyat", "is_rehyat_checkpoint", "load_base_transformer",
    "load_pipeline", "load_rehyat", "read_rehyat_config", "recurrent_forward", "recurrent_unsupported_reason",
    "rehyat_mode", "rehyat_processors", "resolve_blocks", "revert_to_softmax", "save_rehyat", "set_rehyat_mode",
]

# WanPipeline.from_pretrained loads a converted pipeline only if the module its model_index.json names is imported.
from rehyat import modeling_wan as _modeling_wan  # noqa: E402,F401
