"""Where diffusers finds :class:`ReHyAtWanTransformer3DModel` when it loads a pipeline folder.

A converted pipeline's ``model_index.json`` names ``["rehyat.modeling_wan", "ReHyAtWanTransformer3DModel"]``; the
class lives in :mod:`rehyat.wan.model` (see its docstring for why the recorded path is this one).
"""

from diffusers import ModelMixin  # diffusers picks the loading method by looking its base classes up in this module

from rehyat.wan.model import ReHyAtWanTransformer3DModel

__all__ = ["ModelMixin", "ReHyAtWanTransformer3DModel"]
