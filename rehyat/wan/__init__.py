"""ReHyAt for diffusers' Wan2.1 (``WanTransformer3DModel``): processor, conversion, checkpoints, recurrent forward,
pipelines.  See docs/wan.md.

Imports diffusers; ``rehyat`` itself and ``rehyat.attention`` do not.
"""

from .checkpoint import (BaseCheckpointNotFoundError, is_rehyat_checkpoint, load_base_transformer, load_rehyat,
                         read_rehyat_config, save_rehyat)
from .convert import (MODES, ReHyAtConfig, convert_wan_to_rehyat, feature_map_state_dict, get_rehyat_config,
                      get_rehyat_mode, is_rehyat, recurrent_unsupported_reason, rehyat_mode, rehyat_processors,
                      resolve_blocks, revert_to_softmax, set_rehyat_mode)
from .pipeline import load_pipeline
from .processor import ReHyAtWanAttnProcessor, apply_wan_rotary_emb
from .recurrent import chunk_rotary_emb, recurrent_forward

__all__ = [
    "MODES", "BaseCheckpointNotFoundError", "ReHyAtConfig", "ReHyAtWanAttnProcessor", "apply_wan_rotary_emb",
    "chunk_rotary_emb", "convert_wan_to_rehyat", "feature_map_state_dict", "get_rehyat_config", "get_rehyat_mode",
    "is_rehyat", "is_rehyat_checkpoint", "load_base_transformer", "load_pipeline", "load_rehyat",
    "read_rehyat_config", "recurrent_forward", "recurrent_unsupported_reason", "rehyat_mode", "rehyat_processors",
    "resolve_blocks", "revert_to_softmax", "save_rehyat", "set_rehyat_mode",
]
