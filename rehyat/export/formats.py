"""Export formats of the chunk step: a registry, one entry per graph format and its runtime.

Every format says how to write one chunk-step module to a file, how to read the stored input/output shapes back (the
exporter refuses a graph whose dims are not the spec's static values) and how to run the file: :meth:`ExportFormat.open`
returns a :class:`GraphRunner` taking the graph's inputs as a list in the signature's order and returning its outputs
in the same way (numpy float32 / int64).  The exporter, the sidecar, the verification and the video driver go through
this interface only, so a format is added here and nowhere else (its CLI subcommand comes from the registry).

* ``onnx`` — ``torch.onnx.export(dynamo=True)`` to ``<name>.onnx`` (+ ``.onnx.data``, external weights), run by an
  onnxruntime CPU session; the optional ``export`` extra.
* ``executorch`` — ``torch.export`` → ``executorch.exir.to_edge_transform_and_lower`` (XNNPACK partitioner, or none:
  the portable kernels) → ``<name>.pte``, run by ExecuTorch's Python runtime (``executorch.runtime``, the same C++
  runtime a device links); the optional ``executorch`` extra.

Every third-party import is lazy: without the extra, a format fails with :class:`ModuleNotFoundError` naming the
extra to install, and the rest of :mod:`rehyat.export` still imports.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

Shape = tuple[int | str, ...]


class GraphRunner(Protocol):
    """A loaded graph: ``run(inputs)`` takes the inputs in the signature's order, returns the outputs likewise."""

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ExportFormat:
    """One graph format and its runtime (module docstring).

    ``write(step, path, **options)`` exports the module and returns the written file names (first: the graph);
    ``stored_shapes(path, inputs, outputs)`` returns ``{name: shape}`` of every graph input/output as the file stores
    it (``inputs`` / ``outputs``: the signature's names, for formats that store positions only);
    ``open(path, threads)`` returns a :class:`GraphRunner`; ``describe(path, options)`` the sidecar's
    format-specific fields; ``versions()`` the library versions used; ``add_arguments`` / ``options`` the CLI
    subcommand's own flags and their ``write`` options.
    """

    name: str
    title: str
    suffix: str
    runtime: str
    exporter: str
    extra: str
    packages: str
    modules: tuple[str, ...]
    runtime_modules: tuple[str, ...]
    write: Callable[..., list[str]]
    stored_shapes: Callable[[Path, Sequence[str], Sequence[str]], dict[str, Shape]]
    open: Callable[[Path, int | None], GraphRunner]
    describe: Callable[[Path, dict], dict]
    versions: Callable[[], dict]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    options: Callable[[argparse.Namespace], dict]

    def install_hint(self, runtime: bool = False) -> str:
        what = f"the {self.runtime} runtime" if runtime else self.title
        return f"{what} needs the '{self.extra}' extra: pip install 'rehyat[{self.extra}]' ({self.packages})"

    def require(self, runtime: bool = False) -> None:
        """``ModuleNotFoundError`` naming the extra if a library of the exporter (or, ``runtime``: of the runtime)
        is missing."""
        import importlib

        for mod in self.runtime_modules if runtime else self.modules:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                raise ModuleNotFoundError(f"{self.install_hint(runtime)} ({e.name or mod} is missing)") from None


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    if fmt.name in FORMATS:
        raise ValueError(f"export format {fmt.name!r} is already registered")
    if any(f.suffix == fmt.suffix for f in FORMATS.values()):
        raise ValueError(f"file suffix {fmt.suffix!r} already belongs to another export format")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}") from None


def format_for_path(path: str | os.PathLike) -> ExportFormat:
    """The format whose file suffix ``path`` has."""
    suffix = Path(path).suffix
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    raise ValueError(f"{path}: no export format writes {suffix or 'suffix-less'} files (known: "
                     f"{', '.join(f.suffix for f in FORMATS.values())})")


def _float_or_int(a) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.dtype in (np.float32, np.int64) else a.astype(np.float32)


# ------------------------------------------------------------------------------------------------------------- ONNX
def _onnx_write(step, path: Path, *, opset: int | None = None) -> list[str]:
    inputs, outputs = step.inputs(), step.outputs()
    # Traced with autograd on: modules with a separate in-place inference path (the polynomial phi's row tiles, whose
    # slice-wise pow_ exports as slice-scatter + transposes) take their functional path; the graph is the same
    # computation (tests compare it with the eager step) and ~10 % faster in onnxruntime.
    with torch.enable_grad():
        torch.onnx.export(step, step.example_inputs(), str(path), input_names=[s.name for s in inputs],
                          output_names=[s.name for s in outputs], dynamo=True, optimize=True, external_data=True,
                          opset_version=opset, verbose=False)
    return [path.name] + [p.name for p in sorted(path.parent.glob(path.name + ".data"))]


def graph_static_shapes(path: str | os.PathLike, *_names) -> dict[str, Shape]:
    """``{name: shape}`` of every graph input and output as stored in the ONNX file (a symbolic dim is a str)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for v in (*model.graph.input, *model.graph.output):
        dims = v.type.tensor_type.shape.dim
        out[v.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
    return out


def ort_session(path: str | os.PathLike, threads: int | None = None):
    """A CPU onnxruntime session (``threads``: intra-op threads; default: onnxruntime's)."""
    ONNX.require(runtime=True)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtRunner:
    """:class:`GraphRunner` of an ONNX file in an onnxruntime CPU session."""

    def __init__(self, path: Path, threads: int | None = None):
        self.session = ort_session(path, threads)
        self.names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {n: _float_or_int(a) for n, a in zip(self.names, inputs, strict=True)})


def _onnx_describe(path: Path, options: dict) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {"opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def _onnx_versions() -> dict:
    import onnx

    v = {"torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


def _onnx_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")


ONNX = register_format(ExportFormat(
    name="onnx", title="onnx export", suffix=".onnx", runtime="onnxruntime", exporter="torch.onnx.export(dynamo=True)",
    extra="export", packages="onnx, onnxscript, onnxruntime", modules=("onnx", "onnxscript"),
    runtime_modules=("onnxruntime",), write=_onnx_write,
    stored_shapes=graph_static_shapes, open=lambda path, threads=None: OrtRunner(path, threads),
    describe=_onnx_describe, versions=_onnx_versions, add_arguments=_onnx_arguments,
    options=lambda args: {"opset": args.opset}))


# ------------------------------------------------------------------------------------------------------- ExecuTorch
EXECUTORCH_BACKENDS = ("xnnpack", "portable")


def _partitioners(backend: str) -> list:
    """XNNPACK: the delegate runs every op it supports (GEMMs, softmax, elementwise) with its own kernels and
    threadpool; portable: no delegate, ExecuTorch's reference (portable) kernels run every op."""
    if backend not in EXECUTORCH_BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(EXECUTORCH_BACKENDS)}, got {backend!r}")
    if backend == "portable":
        return []
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS, GeluConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class ExactGeluOnly(GeluConfig):
        """XNNPACK's GELU is the exact (erf) one, and executorch 1.5.1 delegates ``gelu(approximate="tanh")`` to it,
        dropping the argument (relative error ~4e-5 through the tiny model); Wan's FFN uses the tanh form, so that
        GELU stays with the portable kernel (the rest of the block still goes to XNNPACK)."""

        def check_constraints(self, node, ep) -> bool:
            approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
            return approximate == "none" and super().check_constraints(node, ep)

    return [XnnpackPartitioner(configs=[ExactGeluOnly if c is GeluConfig else c for c in ALL_PARTITIONER_CONFIGS])]


def _empty(size, physical_layout=None, *, dtype=None, layout=None, device=None, pin_memory=None):
    """Replacement of ``aten.empty_permuted`` (what ``torch.empty_like`` of a permuted tensor traces to: Wan's RoPE
    output buffer), which is not in the core ATen opset ExecuTorch's edge dialect accepts: a plain ``empty`` of the
    same shape — its values are undefined and every element is written next, so the layout changes nothing."""
    return torch.empty(size, dtype=dtype, device=device)


def _pte_write(step, path: Path, *, backend: str = "xnnpack") -> list[str]:
    from executorch.exir import to_edge_transform_and_lower

    parts = _partitioners(backend)
    # Traced with autograd on, as for ONNX (the polynomial phi's functional path, not its in-place row tiles).
    with torch.enable_grad():
        program = torch.export.export(step, step.example_inputs(), strict=False)
    table = torch.export.default_decompositions()
    table[torch.ops.aten.empty_permuted.default] = _empty
    program = program.run_decompositions(table)
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=parts).to_executorch().buffer)
    return [path.name]


def _pte_program(path: Path):
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path))


def _pte_shapes(path: Path, inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, Shape]:
    """The .pte stores positions, not names: ``inputs`` / ``outputs`` name them; a count mismatch is refused."""
    meta = _pte_program(path).metadata("forward")
    if (meta.num_inputs(), meta.num_outputs()) != (len(inputs), len(outputs)):
        raise RuntimeError(f"{path.name}: {meta.num_inputs()} inputs / {meta.num_outputs()} outputs in the program, "
                           f"expected {len(inputs)} / {len(outputs)}")
    shapes = {n: tuple(meta.input_tensor_meta(i).sizes()) for i, n in enumerate(inputs)}
    shapes.update({n: tuple(meta.output_tensor_meta(i).sizes()) for i, n in enumerate(outputs)})
    return shapes


def executorch_threads(threads: int | None) -> None:
    """Size ExecuTorch's (process-wide) threadpool, which XNNPACK runs on; ``None`` keeps its default."""
    if threads:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(int(threads))


class PteRunner:
    """:class:`GraphRunner` of a ``.pte`` program's ``forward`` in ExecuTorch's runtime."""

    def __init__(self, path: Path, threads: int | None = None):
        EXECUTORCH.require(runtime=True)
        executorch_threads(threads)
        self.program = _pte_program(path)  # the method needs its program alive
        self.method = self.program.load_method("forward")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        outs = self.method.execute([torch.from_numpy(_float_or_int(a)) for a in inputs])
        return [o.numpy() for o in outs]


def _pte_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    v = {"torch": torch.__version__}
    for pkg in ("executorch", "torchao"):
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return v


def _pte_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=EXECUTORCH_BACKENDS, default="xnnpack",
                   help="xnnpack: delegate the supported ops to XNNPACK (default); portable: ExecuTorch's portable "
                        "kernels only")


EXECUTORCH = register_format(ExportFormat(
    name="executorch", title="ExecuTorch export", suffix=".pte", runtime="executorch",
    exporter="torch.export.export + executorch.exir.to_edge_transform_and_lower", extra="executorch",
    packages="executorch, torchao, ruamel.yaml, tabulate, flatbuffers",
    modules=("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner"),
    runtime_modules=("executorch.runtime",), write=_pte_write, stored_shapes=_pte_shapes,
    open=lambda path, threads=None: PteRunner(path, threads), describe=lambda path, options: {
        "backend": options.get("backend", "xnnpack")}, versions=_pte_versions, add_arguments=_pte_arguments,
    options=lambda args: {"backend": args.backend}))


__all__ = ["EXECUTORCH", "EXECUTORCH_BACKENDS", "ExportFormat", "FORMATS", "GraphRunner", "ONNX", "OrtRunner",
           "PteRunner", "executorch_threads", "format_for_path", "get_format", "graph_static_shapes", "ort_session",
           "register_format"]
