""" "Which layer lost it": per-layer error of an int8 model against fp32, and the float-fallback search built on it.

Both int8 exporters measure the same thing (ONNX through ONNX Runtime's QDQ debugging tools, ExecuTorch on the
PT2E graph, see their modules): for each layer, the SNR of its int8 output against the fp32 output at the same
point of the graph, over the calibration samples. That SNR is cumulative (it carries every error made upstream), so
each layer is ranked by what it *adds*: ``loss_db`` = the worst SNR among its inputs minus the SNR of its output.
A worked example: a linear whose input arrives at 38 dB and whose output leaves at 21 dB lost 17 dB itself; the
LayerNorm after it, at 20 dB, lost 1 dB and is not the culprit even though its SNR is lower.

:func:`search` is ``--float-fallback auto``: quantize, check the calibration outputs against the scheme's tolerance,
and while they miss it keep the worst layers (by the noise they add) in float, 1, then 2, 4, 8 ... more per round, until
the tolerance is met or nothing is left to keep. The manifest gets the layers kept in float (with their module paths
and source lines) and what that cost in size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

#: rows of the per-layer table stored in the manifest (the worst first); the summary prints the first five
TABLE_ROWS = 20
#: calibration samples the per-layer measurement runs on (past a handful the ranking stops moving)
LAYER_SAMPLES = 8
#: calibration samples an int8 model is checked on against fp32 (float fallback's stopping test, the manifest's
#: calibration_check). Top-1 agreement on few samples is a coin toss: checked on 16 (12 with a clear top-1), one
#: MobileNetV2 int8 agreed on all 12 and stopped the search, then agreed on 33 of 37 evaluation samples.
CHECK_SAMPLES = 64


@dataclass
class LayerError:
    """One layer of the table. ``name``: the graph's node; ``module``: the PyTorch module path it came from
    (``encoder.layer.1.attention.self.query``); ``source``: ``file.py:LINE`` of the user's code that made it."""

    name: str
    op: str
    snr_db: float
    loss_db: float
    module: str | None = None
    source: str | None = None
    quantized: bool = True
    #: the SNR of this layer's own error alone (the noise power it added over its inputs'); the ranking key
    own_snr_db: float | None = None
    #: the nearest measured layers feeding this one (not in the manifest: what float fallback blames for a float
    #: layer that lost accuracy, e.g. the query and key projections of an attention score matmul)
    feeds: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("feeds")
        d["snr_db"], d["loss_db"] = round(self.snr_db, 2), round(self.loss_db, 2)
        if self.own_snr_db is not None:
            d["own_snr_db"] = round(self.own_snr_db, 2)
        return d

    def label(self) -> str:
        where = self.module or self.name
        src = f" ({self.source})" if self.source else ""
        own = f", its own error {self.own_snr_db:.1f} dB" if self.own_snr_db is not None else ""
        return f"{where} [{self.op}]{src}: {self.snr_db:.1f} dB{own}"


def snr_db(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """SNR of ``got`` against ``ref`` over all samples, :func:`mpk.metrics.snr_db`'s definition."""
    from mpk.metrics import snr_db as metric

    r = np.concatenate([np.asarray(a, np.float64).reshape(1, -1) for a in ref], axis=1)
    g = np.concatenate([np.asarray(a, np.float64).reshape(1, -1) for a in got], axis=1)
    return metric(r, g)


def own_snr_db(snr: float, upstream: float) -> float:
    """The SNR of the noise a layer added: its output's noise power (relative to the signal) minus its worst
    input's, in dB; :data:`mpk.metrics.SNR_CAP_DB` when it added none."""
    from mpk.metrics import SNR_CAP_DB

    added = 10 ** (-snr / 10) - 10 ** (-upstream / 10)
    return SNR_CAP_DB if added <= 10 ** (-SNR_CAP_DB / 10) else min(SNR_CAP_DB, -10 * math.log10(added))


def rank(
    snrs: dict[str, float], inputs: dict[str, list[str]], ops: dict[str, str], quantized: set[str]
) -> list[LayerError]:
    """The table: each measured layer with its SNR, the SNR of the noise it added (``own_snr_db``) and ``loss_db``
    (see the module docstring), worst first: by the noise added. ``inputs[name]``: the nearest measured layers
    feeding ``name``; a quantized layer with none is fed by the graph's inputs (exact: 200 dB); a float one with
    none found is given no noise of its own."""
    from mpk.metrics import SNR_CAP_DB

    rows = []
    for name, snr in snrs.items():
        feeding = [snrs[i] for i in inputs.get(name, []) if i in snrs]
        upstream = min(feeding) if feeding else (SNR_CAP_DB if name in quantized else snr)
        rows.append(
            LayerError(name, ops.get(name, "?"), snr, max(0.0, upstream - snr), quantized=name in quantized,
                       own_snr_db=own_snr_db(snr, upstream), feeds=list(inputs.get(name, [])))
        )  # fmt: skip
    rows.sort(key=lambda r: (r.own_snr_db, r.snr_db))
    return rows


def table(rows: list[LayerError], *, samples: int, where: str) -> dict[str, Any]:
    """The manifest's ``layer_errors``: the worst :data:`TABLE_ROWS` layers and how they were measured."""
    return {
        "measured_on": f"{samples} calibration samples, {where}",
        "layers_measured": len(rows),
        "worst": [r.to_dict() for r in rows[:TABLE_ROWS]],
    }


def worst_lines(layer_errors: dict[str, Any] | None, n: int = 5) -> list[str]:
    """The ``n`` worst layers of a manifest's ``layer_errors``, one line each (the summary and error messages)."""
    if not layer_errors:
        return []
    return [LayerError(**row).label() for row in layer_errors.get("worst", [])[:n]]


# --- where a node came from ------------------------------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


def _is_library(path: str) -> bool:
    return "site-packages" in path or "/torch/" in path or "/packager/" in path or path.startswith("<")


def source_line(stack_trace: str | None) -> str | None:
    """``models.py:88`` from a torch.fx node's ``stack_trace``: the innermost frame outside torch and mpk.

    Transformers' own files count as the user's: they hold the layer's code (``modeling_bert.py:312``).
    """
    if not stack_trace:
        return None
    frames = [m for m in _FRAME.finditer(stack_trace) if not _is_library(m.group(1)) or "transformers" in m.group(1)]
    if not frames:
        return None
    m = frames[-1]
    return f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}"


def module_path(nn_module_stack: dict[str, Any] | None) -> str | None:
    """The innermost module path of a torch.fx node's ``nn_module_stack`` (``encoder.layer.0.output.dense``)."""
    if not nn_module_stack:
        return None
    path, _ = list(nn_module_stack.values())[-1]
    path = str(path)
    # torch.export writes L['self'].encoder.layer[0] style paths on some versions; normalise to dotted
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")
    return path or None


# --- the float-fallback search -----------------------------------------------------------------------------------

Q = TypeVar("Q")


@dataclass
class Attempt(Generic[Q]):
    """One quantization with some layers kept in float, and how it did on the calibration samples."""

    quantized: Q
    floats: frozenset[str]
    missed: list[str]
    metrics: dict[str, Any]
    rows: list[LayerError] = field(default_factory=list)


#: the float-fallback rounds may take this many times the first quantization (quantize, check, per-layer table)
SEARCH_TIME_FACTOR = 6.0
#: ... but always at least this long (seconds). A round can cost far more than the first quantization: on the real
#: all-MiniLM-L6-v2 (ExecuTorch) the first took 9 s and the first round 46 s, so 30 s allowed one round (cosine
#: 0.902) where five reach the tolerance (25 layers in float, 0.980). Still well inside --step-timeout (900 s).
SEARCH_MIN_SECONDS = 300.0
#: rounds in a row that do not improve on the best cosine before the search gives up
STALL_ROUNDS = 3


def search(
    quantize: Callable[[frozenset[str]], Q],
    evaluate: Callable[[Q], tuple[list[str], dict[str, Any]]],
    layers: Callable[[Q], list[LayerError]],
    *,
    enabled: bool,
    max_rounds: int = 8,
    budget_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[Attempt[Q], dict[str, Any] | None]:
    """Quantize; when ``enabled`` and the calibration outputs miss the tolerance, keep the worst layers in float.

    ``quantize(floats)`` quantizes with the nodes ``floats`` left in float; ``evaluate(q)`` gives the tolerances
    it misses on the calibration samples and its metrics; ``layers(q)`` the per-layer table, worst first.
    Returns the attempt to ship (the first that meets the tolerance, else the one with the best cosine) and the
    report (None when the search was not needed or not enabled); the report's ``stopped`` says in one line why
    the search ended.

    The search is bounded: at most ``max_rounds`` rounds, and no new round once ``budget_s`` seconds have gone by
    (default: :data:`SEARCH_TIME_FACTOR` x the first quantization with its per-layer table, at least
    :data:`SEARCH_MIN_SECONDS`); it also
    stops after :data:`STALL_ROUNDS` rounds without a better cosine, and at once when the fp32 outputs are all zero
    (no layer kept in float can match a reference that carries no signal; a degenerate model, seen with a
    random-init MobileViT whose norm scales zeroed every activation: each round then ran for minutes and the
    whole run did not end).

    Candidates per round: the quantized layers that add the most noise (:func:`rank`); a float layer that adds
    much (an attention score matmul multiplying two noisy projections) puts the quantized layers feeding it there.
    """
    import time

    now = clock or time.monotonic
    t0 = now()
    first = quantize(frozenset())
    missed, metrics = evaluate(first)
    attempt = Attempt(first, frozenset(), missed, metrics)
    if not enabled or not missed:
        return attempt, None
    tried = [attempt]
    if not _zero_reference(metrics):
        attempt.rows = layers(first)  # the first round's table: part of the cost the budget scales with
    budget = budget_s if budget_s is not None else max(SEARCH_MIN_SECONDS, SEARCH_TIME_FACTOR * (now() - t0))
    step, best_score, stall = 1, _progress(metrics, {}), 0
    stopped = f"{max_rounds} rounds, the most it tries"
    if _zero_reference(metrics):
        stopped = "the fp32 outputs are all zero on the calibration samples: nothing for float layers to recover"
        max_rounds = 0
    for _ in range(max_rounds):
        if now() - t0 > budget:
            stopped = f"time budget: {now() - t0:.0f} s spent, {budget:.0f} s allowed"
            break
        attempt.rows = attempt.rows or layers(attempt.quantized)
        candidates = _candidates(attempt.rows, attempt.floats)
        if not candidates:
            stopped = "no quantized layer left that adds noise"
            break
        floats = attempt.floats | frozenset(candidates[:step])
        if progress:
            progress(f"float fallback: {len(floats)} layer(s) in float")
        q = quantize(floats)
        missed, metrics = evaluate(q)
        attempt = Attempt(q, floats, missed, metrics)
        tried.append(attempt)
        if not missed:
            stopped = "met the tolerance"
            break
        if _better(metrics, best_score):
            best_score, stall = _progress(metrics, best_score), 0
        else:
            stall += 1
            if stall >= STALL_ROUNDS:
                stopped = f"no better cosine or top-1 agreement in {STALL_ROUNDS} rounds"
                break
        step *= 2
    best = attempt if not attempt.missed else max(tried, key=lambda a: (-len(a.missed), _score(a.metrics)))
    report = {
        "mode": "auto",
        "met_tolerance": not best.missed,
        "rounds": len(tried) - 1,
        "seconds": round(now() - t0, 1),
        "stopped": stopped,
        "before": _rounded(tried[0].metrics),
        "after": _rounded(best.metrics),
        "missed": best.missed,
    }
    return best, report


def _candidates(rows: list[LayerError], floats: frozenset[str]) -> list[str]:
    """Layers to keep in float next, worst first: each quantized layer that adds noise, and for a float layer that
    adds noise the quantized layers that feed it (through float ones)."""
    by_name = {r.name: r for r in rows}
    out: list[str] = []

    def take(name: str, seen: set[str]) -> None:
        r = by_name.get(name)
        if r is None or name in seen or name in floats or name in out:
            return
        seen.add(name)
        if r.quantized:
            out.append(name)
        else:
            for f in r.feeds:
                take(f, seen)

    for r in rows:
        if _adds_noise(r):
            if r.quantized:
                take(r.name, set())
            else:
                for f in r.feeds:
                    take(f, {r.name})
    return out


def _zero_reference(metrics: dict[str, Any]) -> bool:
    from mpk.metrics import SNR_CAP_DB

    snr = metrics.get("snr_db")
    return isinstance(snr, float) and snr <= -SNR_CAP_DB


def _adds_noise(row: LayerError) -> bool:
    from mpk.metrics import SNR_CAP_DB

    return row.own_snr_db < SNR_CAP_DB if row.own_snr_db is not None else row.loss_db > 0


_PROGRESS = ("cosine", "top1_agreement")


def _progress(metrics: dict[str, Any], best: dict[str, float]) -> dict[str, float]:
    """The best cosine and top-1 agreement seen so far, with ``metrics``'."""
    out = dict(best)
    for k in _PROGRESS:
        v = metrics.get(k)
        if isinstance(v, float) and math.isfinite(v):
            out[k] = max(v, out.get(k, -math.inf))
    return out


def _better(metrics: dict[str, Any], best: dict[str, float]) -> bool:
    """Whether ``metrics`` beats the best so far on cosine or on top-1 agreement (a miss may be either)."""
    return any(isinstance(metrics.get(k), float) and metrics[k] > best.get(k, -math.inf) for k in _PROGRESS)


#: one-sided z of the calibration check's margin: 1.645 = a 5% chance that an evaluation set misses what it met
MARGIN_Z = 1.645


def reuse(rows: Sequence[Any] | None, n: int) -> list[Any] | None:
    """``rows[:n]`` when at least ``n`` were measured already (outputs calibration or bias correction computed on
    the samples the check runs), else None: the caller runs them."""
    return list(rows[:n]) if rows is not None and len(rows) >= n else None


def within_sampling_error(
    reference: Sequence[Sequence[np.ndarray]],
    actual: Sequence[Sequence[np.ndarray]],
    *,
    task: str | None,
    minimum: float | None,
) -> str | None:
    """A miss line when the calibration check's top-1 agreement meets ``minimum`` by less than its sampling error.

    The float-fallback search judges on a few calibration samples (16); verification judges on the evaluation
    set. A per-pixel or per-token agreement is thousands of decisions, but they come from those few images or
    sentences and move together, so its error is that of the per-sample agreements: the clustered standard error
    ``sqrt(n/(n-1) * sum(c_i^2 (a_i - a)^2)) / sum(c_i)`` (``a_i``: sample i's agreement on its ``c_i`` clear
    decisions). Verification then draws its own samples, with an error of its own: the two estimates differ by
    ``se * sqrt(2)`` (taking the evaluation set as large as the check), so the check is met only when
    ``a - MARGIN_Z * se * sqrt(2) >= minimum``. SegFormer int8 met 0.95 on its 16 calibration images at 0.9556
    (per-image spread 0.012, se 0.003: lower bound 0.9488) and missed it on 48 evaluation images at 0.9498;
    the search never started. ``reference``/``actual``: per sample, its outputs.

    A classifier with one decision per sample and all agreeing has no spread (error 0): nothing changes for it.
    """
    from mpk.metrics import compare

    if minimum is None or len(reference) < 2:
        return None
    agree, counts = [], []
    for ref, got in zip(reference, actual, strict=True):
        m = compare([np.asarray(r)[None] for r in ref], [np.asarray(g)[None] for g in got], task=task)
        a, c = m.get("top1_agreement"), m.get("top1_counted")
        if a is None or not c:
            continue
        agree.append(float(a))
        counts.append(float(c))
    n = len(agree)
    if n < 2:
        return None
    a_i, c_i = np.asarray(agree), np.asarray(counts)
    mean = float((a_i * c_i).sum() / c_i.sum())
    se = float(np.sqrt(n / (n - 1) * ((c_i * (a_i - mean)) ** 2).sum()) / c_i.sum())
    margin = MARGIN_Z * se * math.sqrt(2)
    if mean < minimum or mean - margin >= minimum:
        return None  # a plain miss is check()'s to report
    return (
        f"top1_agreement {mean:.4f} on {n} calibration samples meets min_top1_agreement {minimum:g} by less than "
        f"another set of samples may differ from it ({margin:.4f}: lower bound {mean - margin:.4f})"
    )


def _score(metrics: dict[str, Any]) -> float:
    c = metrics.get("cosine")
    return c if isinstance(c, float) and math.isfinite(c) else -1.0


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items() if v is not None}
