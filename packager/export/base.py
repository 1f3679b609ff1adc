"""The exporter contract: one module per backend behind this small base class.

An exporter turns a :class:`~packager.types.LoadedModel` into one artifact for
one quantization scheme, and can open that artifact on the host runtime so the
packager can verify it against fp32. Capabilities are plain data in
:mod:`packager.export.capabilities` (no heavy imports) so impossible
combinations are refused before any work starts.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from packager.types import Dataset, ExportedArtifact, LoadedModel


class HostSession(Protocol):
    """An artifact opened on this host's runtime. ``run`` takes one sample, returns the outputs."""

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]: ...


class Started:
    """An export begun by :meth:`Exporter.start_export`. ``finish()`` returns the artifact (or raises what
    ``export`` would); ``done()`` is True when ``finish`` would not wait; ``cancel()`` stops what still runs
    (the pipeline's way out on Ctrl-C or a failure elsewhere)."""

    def __init__(
        self,
        finish: Callable[[], ExportedArtifact],
        *,
        running: bool = False,
        done: Callable[[], bool] = lambda: True,
        cancel: Callable[[], None] = lambda: None,
    ) -> None:
        #: True when part of the export is still running
        self.running = running
        self.finish, self.done, self.cancel = finish, done, cancel

    @classmethod
    def now(cls, artifact: ExportedArtifact) -> Started:
        """An export that is already complete."""
        return cls(lambda: artifact)


class Exporter(abc.ABC):
    #: registry name: "executorch", "onnx", "coreml"
    name: str
    #: file suffix of the main artifact: ".pte", ".onnx", ".mlpackage"
    suffix: str
    #: int8: "auto" keeps the worst layers in float until the calibration outputs meet the tolerance; "off" does not
    #: (recipe ``float_fallback``, set by the pipeline)
    float_fallback: str = "off"
    #: the recipe's tolerance overrides (scheme -> {key: value}), for the float-fallback check
    tolerance_overrides: dict[str, dict[str, float]] = {}  # noqa: RUF012 - replaced per instance, never mutated

    @abc.abstractmethod
    def export(self, model: LoadedModel, scheme: str, calibration: Dataset | None, out_dir: Path) -> ExportedArtifact:
        """Write the artifact for ``scheme`` under ``out_dir`` (exclusive to this call).

        Raises :class:`~mpk.errors.ExportError` naming the failing operator
        when the backend cannot lower the model.
        """

    def start_export(
        self,
        model: LoadedModel,
        scheme: str,
        calibration: Dataset | None,
        out_dir: Path,
        *,
        overlap: Callable[[], bool],
    ) -> Started:
        """:meth:`export`, begun. When ``overlap()`` (asked right before) says so, the exporter may leave
        Python-bound work running in a forked child (:class:`packager.host.Forked`) so the pipeline builds the
        next artifact meanwhile; the finished artifact is the same either way. The default does everything now."""
        return Started.now(self.export(model, scheme, calibration, out_dir))

    @abc.abstractmethod
    def open(self, path: Path, *, threads: int | None = None) -> HostSession:
        """Open an artifact on the host runtime. Raises RuntimeMissing where the host cannot run it
        (CoreML off macOS)."""

    def can_run_on_host(self) -> bool:
        return True

    def open_reference(self, path: Path, *, threads: int | None = None) -> HostSession | None:
        """The artifact evaluated as its format defines it, whatever kernels this CPU picks; None when the
        host runtime's own result is that already (the default). See :func:`packager.verify.verify_artifact`."""
        return None

    def weight_check(self, artifact: ExportedArtifact) -> dict[str, Any] | None:
        """A check of the artifact's stored weights that needs no runtime (CoreML off macOS); None if none."""
        return None


# --- helpers shared by the exporters (torch imported lazily, inside each function) ---------------------------


def dynamic_shapes(model: LoadedModel) -> tuple[dict[int, object], ...] | None:
    """``torch.export`` dynamic_shapes built from the TensorSpecs, or None when every dim is static.

    A spec ``TensorSpec("x", ("batch", 3, 32, 32), dynamic={"batch": (1, 8)})`` becomes
    ``({0: Dim("batch", min=1, max=8)},)``; the same name on two inputs is one shared Dim.
    """
    if not any(isinstance(d, str) for spec in model.inputs for d in spec.shape):
        return None
    import torch

    dims: dict[str, object] = {}
    out: list[dict[int, object]] = []
    for spec in model.inputs:
        axes: dict[int, object] = {}
        for axis, d in enumerate(spec.shape):
            if isinstance(d, str):
                if d not in dims:
                    lo, hi = spec.dynamic.get(d, (1, 1 << 16))
                    dims[d] = torch.export.Dim(d, min=lo, max=hi)
                axes[axis] = dims[d]
        out.append(axes)
    return tuple(out)


def describe_failure(exc: BaseException) -> str:
    """One or two lines naming what failed, from a torch.export / lowering exception.

    Their messages run to pages; the useful parts are the operator (``aten.nonzero.default``) and the
    user's source line (``model.py:12 in forward``). We pull those out when present, else the first line.
    """
    import re

    text = strip_ansi(str(exc)) or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    head = lines[0] if lines else type(exc).__name__
    if len(head) > 300:
        head = head[:297] + "..."
    parts = [f"{type(exc).__name__}: {head}"]
    located = getattr(exc, "mpk_where", None)  # set where mpk ran the graph node by node (locate_node)
    if located:
        parts.append(located)
        return "; ".join(parts)
    op = re.search(r"\b(aten|quantized_decomposed|torchao|prims|edge)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", text)
    if op and op.group(0) not in head:
        parts.append(f"operator {op.group(0)}")
    where = _user_frame(text, exc)
    if where:
        parts.append(where)
    return "; ".join(parts)


_ANSI = None


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (torch.onnx's messages carry them; a manifest must not)."""
    import re

    global _ANSI
    if _ANSI is None:
        _ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
    return _ANSI.sub("", text)


def locate_node(gm: Any, sample: tuple[Any, ...]) -> str | None:
    """Run ``gm`` (a torch.fx GraphModule) node by node on ``sample``; when a node raises, one phrase naming it:
    ``operator aten.index.Tensor in embeddings.position_embeddings (modeling_bert.py:123)``. None when it runs.

    A failure inside a captured graph otherwise points at the wrapper's ``forward`` that called it.
    """
    import torch

    failed: list[Any] = []

    class Locator(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            try:
                return super().run_node(n)
            except Exception:
                if not failed:
                    failed.append(n)
                raise

    try:
        with torch.no_grad():
            Locator(gm).run(*sample)
    except Exception:
        pass
    if not failed:
        return None
    return describe_node(failed[0])


def describe_node(n: Any) -> str:
    """``operator aten.linear.default in encoder.layer.0.output.dense (modeling_bert.py:412)`` for a torch.fx node."""
    import torch

    from packager.export.layer_errors import module_path, source_line

    target = n.target if isinstance(n.target, torch._ops.OpOverload) else getattr(n.target, "_op", n.target)
    name = getattr(target, "name", None)
    op = str(name()).replace("::", ".") if callable(name) else getattr(target, "__name__", str(target))
    where = module_path(n.meta.get("nn_module_stack"))
    src = source_line(n.meta.get("stack_trace"))
    text = f"operator {op}"
    if where:
        text += f" in {where}"
    if src:
        text += f" ({src})"
    return text


def _is_library(file: str) -> bool:
    return "site-packages" in file or "/torch/" in file or "/packager/" in file or file.startswith(("<", "_export/"))


def _user_frame(text: str, exc: BaseException) -> str | None:
    """``at model.py:12 in forward: if x.sum() > 0:``: the user's line that torch quotes, else the innermost
    traceback frame outside torch and mpk."""
    import re
    import traceback

    for m in re.finditer(r'File "([^"]+\.py)", line (\d+), in (\w+)\n\s*(.*)', text):
        if not _is_library(m.group(1)):
            code = f": {m.group(4).strip()}" if m.group(4).strip() else ""
            return f"at {Path(m.group(1)).name}:{m.group(2)} in {m.group(3)}{code}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_library(f.filename)]
    if frames:
        f = frames[-1]
        return f"at {Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()}".rstrip(": ")
    return None


def capture(model: LoadedModel, backend: str):
    """``torch.export`` the model (or reuse the ExportedProgram it came with). ExportError on failure."""
    import torch

    from mpk.errors import ExportError

    if model.exported_program is not None:
        return model.exported_program
    try:
        with torch.no_grad():
            return torch.export.export(
                model.module.eval(), tuple(model.example_inputs), dynamic_shapes=dynamic_shapes(model), strict=False
            )
    except Exception as e:  # torch.export raises many types; all mean "this model cannot be captured"
        raise ExportError(
            backend,
            f"torch.export could not capture {model.name!r}: {describe_failure(e)}",
            hint="data-dependent Python control flow (if x.sum() > 0) cannot be captured; use torch.cond/torch.where",
        ) from e
