"""On-device export of the recurrent chunk step: fixed-shape graphs with explicit state in / state out.

* :mod:`rehyat.export.step` — the causal hybrid step on fixed shapes from standard ops (masked window, no fused
  kernels): :func:`fixed_hybrid_step`, :class:`FixedState`, :func:`window_valid`;
* :mod:`rehyat.export.graphs` — exportable modules: :class:`BlockChunkStep` (one converted block),
  :class:`TransformerChunkStep` (the whole fully converted transformer, one chunk / step / CFG branch),
  :class:`DenseBlockStep` (a softmax block, for comparison);
* :mod:`rehyat.export.formats` — the registry of graph formats and their runtimes: ``onnx`` (``torch.onnx.export``,
  dynamo; onnxruntime) and ``executorch`` (``torch.export`` → ``.pte``, XNNPACK or portable kernels; ExecuTorch's
  runtime);
* :mod:`rehyat.export.exporter` — export in one format + the sidecar ``rehyat_export.json`` (one layout for all);
* :mod:`rehyat.export.driver` — the chunk-by-chunk video driver over any format's runner (states carried by it);
* :mod:`rehyat.export.verify` — an exported graph in its runtime against the eager recurrent step.

CLI: ``python -m rehyat.export {onnx,executorch,generate} ...``; docs/wan.md, "On-device export".  onnx, onnxscript
and onnxruntime are the optional ``export`` extra (``pip install 'rehyat[export]'``), ExecuTorch the ``executorch``
extra; this package imports them lazily.
"""

from .graphs import BlockChunkStep, DenseBlockStep, StepShapes, TensorSpec, TransformerChunkStep
from .step import STATE_FIELDS, FixedState, fixed_hybrid_step, window_valid

__all__ = ["BlockChunkStep", "DenseBlockStep", "FixedState", "STATE_FIELDS", "StepShapes", "TensorSpec",
           "TransformerChunkStep", "fixed_hybrid_step", "window_valid"]
