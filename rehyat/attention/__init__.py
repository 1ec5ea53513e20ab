"""The ReHyAt attention op in three forms, plus baselines, behind one registry.

Layout: ``q, k, v: [B, N, H, D]``; features ``fq, fk: [B, N, H, F]``; tokens frame-major.
"""

from .chunked import chunk_local_attention, hybrid_attention, linear_attention
from .geometry import Chunk, ChunkGeometry
from .kinds import ATTENTION_KINDS, AttentionKind, get_attention_kind, register_attention_kind
from .recurrent import HybridState, hybrid_attention_recurrent, hybrid_attention_step
from .reference import hybrid_attention_reference, hybrid_masks, masked_joint_attention
from .softmax_lse import SOFTMAX_BACKENDS, softmax_with_lse

__all__ = [
    "ATTENTION_KINDS", "AttentionKind", "Chunk", "ChunkGeometry", "HybridState", "SOFTMAX_BACKENDS",
    "chunk_local_attention", "get_attention_kind", "hybrid_attention", "hybrid_attention_recurrent",
    "hybrid_attention_reference", "hybrid_attention_step", "hybrid_masks", "linear_attention",
    "masked_joint_attention", "register_attention_kind", "softmax_with_lse",
]
