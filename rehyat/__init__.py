"""ReHyAt: recurrent hybrid (chunk-local softmax + learned linear) attention for video diffusion transformers.

Sub-packages and modules:
- :mod:`rehyat.attention` — the op (dense oracle, parallel chunked, recurrent) and the registry of attention kinds.
- :mod:`rehyat.feature_maps` — learnable feature maps phi (polynomial, Hedgehog, ReLU, 1+ELU), registered by name.
- :mod:`rehyat.cost` — analytic FLOPs / activation memory of attention kinds, Wan blocks and whole Wan models.
"""

__version__ = "0.1.0"
