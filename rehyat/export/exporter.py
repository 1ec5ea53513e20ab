"""Export of the chunk steps in one of the registered formats (:mod:`rehyat.export.formats`: ONNX, ExecuTorch) and
the sidecar that describes them.

``export_model(model, out_dir, height=, width=, format=)`` loads a fully converted causal ReHyAt Wan model (``tiny``, a
converted pipeline folder or a ReHyAt checkpoint, as :func:`rehyat.generate.load_model` reads it), builds
:class:`~rehyat.export.graphs.TransformerChunkStep` (and, with ``graphs=("transformer", "blocks")``, one
:class:`~rehyat.export.graphs.BlockChunkStep` per block), exports each to ``<name>.onnx`` (+ ``<name>.onnx.data``,
external weights) or ``<name>.pte``, checks that every graph input and output has the static shape its spec says,
and writes ``rehyat_export.json`` (:data:`SIDECAR`, one layout for every format): the graph format and its runtime,
files, input/output names, shapes and dtypes, the geometry and the state layout (docs/wan.md, "On-device export").
Everything is float32 on CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .formats import ExportFormat, format_for_path, get_format, graph_static_shapes
from .graphs import BlockChunkStep, TensorSpec, TransformerChunkStep

SIDECAR = "rehyat_export.json"
EXPORT_FORMAT = "rehyat-chunk-step"
EXPORT_VERSION = 2
GRAPH_CHOICES = ("transformer", "blocks")


def export_graph(step, path: str | os.PathLike, *, format: str | None = None, **options) -> dict:
    """Export one chunk step to ``path`` in ``format`` (default: the one of ``path``'s suffix, ``.onnx`` / ``.pte``;
    ``options``: the format's, e.g. ``opset=`` / ``backend=``) and return its sidecar entry.

    Raises ``RuntimeError`` if a stored input/output shape is not the static shape of the step's spec.
    """
    fmt = get_format(format) if format else format_for_path(path)
    fmt.require()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    step.training = False  # the wrapper only: the model's own modules keep their flags
    inputs, outputs = step.inputs(), step.outputs()
    files = fmt.write(step, path, **options)
    stored = fmt.stored_shapes(path, [s.name for s in inputs], [s.name for s in outputs])
    for spec in (*inputs, *outputs):
        if stored.get(spec.name) != tuple(spec.shape):
            raise RuntimeError(f"{path.name}: {spec.name} has shape {stored.get(spec.name)} in the graph, expected the "
                               f"static {tuple(spec.shape)}")
    return {"files": files, "inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs]}


def state_layout(step) -> dict:
    """The sidecar's description of the per-layer recurrent state a driver carries between chunk calls."""
    g = step.geometry
    fields = list(g.state_fields())
    return {
        "layers": step.layers,
        "fields": fields,
        "input_name": "state.{layer}.{field}",
        "output_name": "next_state.{layer}.{field}",
        "fields_doc": {s.name.rsplit(".", 1)[1]: {"shape": list(s.shape), "dtype": "float32", "doc": s.doc}
                       for s in g.state_specs(0, "state")},
        "tail_tokens": g.tail_tokens,
        "window_valid": {
            "shape": [g.overlap_frames + g.chunk_frames],
            "tail_slots": g.overlap_frames,
            "chunk_slots": g.chunk_frames,
            "rule": "slot i < T_o: 1 iff T_o - i <= frames before the chunk (tail right-aligned); slot T_o + j: 1 iff "
                    "j < the chunk's real frames (a ragged last chunk is padded at the end)",
        },
        "first_chunk": "all state tensors zero, tail slots marked 0 in window_valid",
        "carry": "next_state.* of chunk c (same step, same CFG branch) is state.* of chunk c + 1; nothing continues "
                 "after a ragged (shorter, last) chunk",
        "eager_equivalent": "rehyat.attention.HybridState: s, z as is; tail_* = its last tail tokens, right-aligned "
                            "(rehyat.export.step.FixedState.from_hybrid)",
    }


def write_sidecar(out_dir: str | os.PathLike, entry: dict) -> Path:
    path = Path(out_dir) / SIDECAR
    path.write_text(json.dumps(entry, indent=2, sort_keys=False) + "\n")
    return path


def read_sidecar(export_dir: str | os.PathLike) -> dict:
    """The sidecar of an export folder, or ``FileNotFoundError`` / ``ValueError`` saying what is wrong."""
    path = Path(export_dir).expanduser() / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: export a model first with `python -m rehyat.export "
                                f"{{onnx,executorch}} --model tiny --height 32 --width 32 --out {Path(export_dir)}`")
    side = json.loads(path.read_text())
    if side.get("format") != EXPORT_FORMAT or side.get("version") != EXPORT_VERSION:
        raise ValueError(f"{path} is not a {EXPORT_FORMAT} v{EXPORT_VERSION} sidecar (format {side.get('format')!r}, "
                         f"version {side.get('version')!r}): export it again")
    get_format(side.get("graph_format", "?"))
    return side


def sidecar_format(side: dict) -> ExportFormat:
    """The :class:`~rehyat.export.formats.ExportFormat` of a sidecar's graphs."""
    return get_format(side["graph_format"])


def export_transformer(transformer, out_dir: str | os.PathLike, *, latent_height: int, latent_width: int,
                       text_tokens: int, graphs: Sequence[str] = ("transformer",), format: str = "onnx",
                       extra: dict | None = None, **options) -> Path:
    """Export the chunk step(s) of a fully converted causal ReHyAt transformer (float32) into ``out_dir`` in
    ``format`` (:data:`rehyat.export.formats.FORMATS`; ``options``: the format's, e.g. ``opset=`` for ONNX,
    ``backend=`` for ExecuTorch); returns the sidecar path.  ``graphs``: ``"transformer"`` (the whole model, one
    chunk) and/or ``"blocks"`` (one graph per block).  ``extra`` is merged into the sidecar (model spec, pixel size,
    VAE factors)."""
    fmt = get_format(format)
    bad = sorted(set(graphs) - set(GRAPH_CHOICES))
    if bad or not graphs:
        raise ValueError(f"graphs must be some of {GRAPH_CHOICES}, got {list(graphs)}")
    fmt.require()
    transformer = transformer.float().eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    whole = TransformerChunkStep(transformer, height=latent_height, width=latent_width, text_tokens=text_tokens)
    entry = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, **(extra or {}),
             "rehyat": transformer.rehyat_config.to_dict(),
             "geometry": {**whole.geometry.to_json(), "latent_height": latent_height, "latent_width": latent_width,
                          "patch_size": list(whole.patch), "layers": whole.layers, "text_tokens": text_tokens,
                          "in_channels": whole.in_channels, "out_channels": whole.out_channels,
                          "text_dim": whole.text_dim, "max_frames": whole.rope.max_frames},
             "state": state_layout(whole), "graphs": {}, "graph_format": fmt.name, "runtime": fmt.runtime,
             "exporter": fmt.exporter, "dtype": "float32", "versions": fmt.versions()}
    if "transformer" in graphs:
        entry["graphs"]["transformer"] = export_graph(whole, out_dir / f"transformer{fmt.suffix}", format=fmt.name,
                                                      **options)
    if "blocks" in graphs:
        for i, block in enumerate(transformer.blocks):
            step = BlockChunkStep(block, height=whole.geometry.height, width=whole.geometry.width,
                                  text_tokens=text_tokens)
            entry["graphs"][f"block.{i}"] = export_graph(step, out_dir / f"block_{i}{fmt.suffix}", format=fmt.name,
                                                         **options)
    entry.update(fmt.describe(out_dir / next(iter(entry["graphs"].values()))["files"][0], options))
    return write_sidecar(out_dir, entry)


def latent_size(pipe, height: int, width: int) -> tuple[int, int]:
    """Latent ``(h, w)`` of a pixel size, checked against the VAE factor and the transformer's patch."""
    f = pipe.vae_scale_factor_spatial
    _, ph, pw = pipe.transformer.config.patch_size
    if height % (f * ph) or width % (f * pw) or height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive multiples of {f * ph} (VAE factor {f} x patch {ph}), "
                         f"got {height}x{width}")
    return height // f, width // f


def load_exportable(model, *, base_model: str | os.PathLike | None = None):
    """The float32 CPU pipeline of ``model`` (``tiny``, a converted pipeline folder or a ReHyAt checkpoint), checked
    to have a chunk step: one ReHyAt transformer, every block converted, causal."""
    from rehyat.generate import load_model
    from rehyat.wan.convert import is_rehyat

    pipe = load_model(model, device="cpu", torch_dtype=torch.float32, base_model=base_model)
    t = pipe.transformer
    if not is_rehyat(t):
        raise ValueError(f"{model} is a dense (softmax) Wan model; only a fully converted causal ReHyAt model has a "
                         f"chunk step (convert with `python -m rehyat.convert --preset long-video`)")
    if getattr(pipe, "transformer_2", None) is not None:
        raise ValueError("two-expert pipelines (Wan2.2 A14B) are not exported yet: export each expert's folder")
    reason = t.recurrent_unsupported_reason()
    if reason:
        raise ValueError(f"no chunk step for {model}: {reason}")
    return pipe


def export_pipeline(pipe, out_dir: str | os.PathLike, *, height: int, width: int, text_tokens: int,
                    graphs: Iterable[str] = ("transformer",), format: str = "onnx", spec=None,
                    base_model: str | os.PathLike | None = None, **options) -> Path:
    """Export the chunk step(s) of ``pipe.transformer`` for ``height x width`` pixel frames and ``text_tokens`` text
    tokens in ``format`` (``options``: the format's); ``spec`` / ``base_model`` are recorded so the driver can load
    the same host pipeline.  Returns the sidecar path."""
    lh, lw = latent_size(pipe, height, width)
    extra = {"model": {"spec": None if spec is None else str(spec),
                       "base": None if base_model is None else str(base_model)},
             "pixels": {"height": height, "width": width, "vae_scale_spatial": pipe.vae_scale_factor_spatial,
                        "vae_scale_temporal": pipe.vae_scale_factor_temporal}}
    return export_transformer(pipe.transformer, out_dir, latent_height=lh, latent_width=lw,
                              text_tokens=int(text_tokens), graphs=tuple(graphs), format=format, extra=extra,
                              **options)


def export_model(model, out_dir: str | os.PathLike, *, height: int, width: int, text_tokens: int | None = None,
                 graphs: Iterable[str] = ("transformer",), format: str = "onnx",
                 base_model: str | os.PathLike | None = None, **options) -> Path:
    """:func:`load_exportable` + :func:`export_pipeline`; ``text_tokens`` defaults to the model's
    ``max_sequence_length`` (tiny: 32, Wan: 512).  Returns the sidecar path."""
    from rehyat.generate import model_defaults

    get_format(format).require()
    pipe = load_exportable(model, base_model=base_model)
    return export_pipeline(pipe, out_dir, height=height, width=width,
                           text_tokens=text_tokens or model_defaults(model)["max_sequence_length"], graphs=graphs,
                           format=format, spec=model, base_model=base_model, **options)


__all__ = ["EXPORT_FORMAT", "GRAPH_CHOICES", "SIDECAR", "TensorSpec", "export_graph", "export_model",
           "export_pipeline", "export_transformer", "graph_static_shapes", "latent_size", "load_exportable",
           "read_sidecar", "sidecar_format", "state_layout", "write_sidecar"]
