"""The conformance corpus as data: each model, its family, how it is fed, and the data files an app team would pass.

``CORPUS`` lists every entry; :func:`write_data` writes an entry's calibration and evaluation ``.npz`` (keyed by input
name, leading axis = sample), and :func:`package_args` the ``mpk package`` arguments for it. ``bench/conformance.py``
runs the whole table; ``tests/conformance/test_conformance.py`` runs the ``fast`` subset in CI.

Inputs are synthetic but shaped like the real thing: token ids drawn from the vocabulary with an attention mask that
pads the tail of some samples, images and audio as Gaussian noise, IMU readings as noisy sinusoids. The models are
random-init (except MiniLM), so their class scores are often near-ties: that is what the "clear top-1" rule of
:mod:`mpk.metrics` is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODELS_FILE = Path(__file__).resolve().parent / "models.py"


@dataclass(frozen=True)
class Input:
    """One model input as the data files hold it. ``kind``: ``normal``, ``ids`` (int64 in [1, vocab)),
    ``mask`` (int64 ones with a padded tail on every other sample), ``imu`` (noisy sinusoids)."""

    name: str
    shape: tuple[int, ...]
    kind: str = "normal"
    vocab: int = 1000


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    inputs: tuple[Input, ...]
    #: in the CI subset (smallest models, fewest views)
    fast: bool = False
    #: extra ``mpk package`` flags (``--input-shape`` for a dynamic batch)
    flags: tuple[str, ...] = ()
    #: what the entry exercises beyond "it packages"
    note: str = ""
    #: schemes for this entry (the default table: fp32 and int8)
    schemes: tuple[str, ...] = ("none", "int8")
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def factory(self) -> str:
        return f"{MODELS_FILE}:{self.name}"


IMAGE32 = (Input("pixel_values", (1, 3, 32, 32)),)
TOKENS = (Input("input_ids", (1, 16), "ids"), Input("attention_mask", (1, 16), "mask"))

CORPUS: list[Entry] = [
    Entry("mobilenet_v2", "CNN", IMAGE32, note="depthwise convs (HF MobileNetV2)"),
    Entry("resnet", "CNN", IMAGE32, note="HF ResNet, BatchNorm folded"),
    Entry("convnext", "CNN", IMAGE32, note="LayerNorm + GELU in a CNN"),
    Entry(
        "cnn_dynamic_batch",
        "CNN",
        (Input("image", (1, 3, 32, 32)),),
        fast=True,
        flags=("--input-shape", "image:batch=1..8x3x32x32"),
        note="dynamic batch declared with --input-shape, factory example has batch 1",
    ),
    Entry("vit", "vision transformer", IMAGE32, note="attention, LayerNorm, GELU"),
    Entry("deit", "vision transformer", IMAGE32),
    Entry("mobilevit", "vision transformer", (Input("pixel_values", (1, 3, 64, 64)),)),
    Entry("segformer", "segmentation", (Input("pixel_values", (1, 3, 64, 64)),), note="per-pixel agreement"),
    Entry("bert", "text encoder", TOKENS, fast=True, note="int64 token ids + attention mask"),
    Entry("distilbert", "text encoder", TOKENS),
    Entry(
        "minilm",
        "text encoder",
        (Input("input_ids", (1, 16), "ids", 30522), Input("attention_mask", (1, 16), "mask")),
        note="REAL pretrained all-MiniLM-L6-v2 from PyPI, offline",
    ),
    Entry("llama", "decoder", (Input("input_ids", (1, 16), "ids"),), fast=True, note="per-token argmax agreement"),
    Entry("gpt2", "decoder", (Input("input_ids", (1, 16), "ids"),)),
    Entry("whisper_encoder", "audio", (Input("audio", (1, 16, 64)),)),
    Entry("wav2vec2", "audio", (Input("audio", (1, 1600)),)),
    Entry("lstm_text", "recurrent", (Input("input_ids", (1, 16), "ids"),), note="token ids into an LSTM"),
    Entry("gru_imu", "recurrent", (Input("imu", (1, 128, 6), "imu"),), note="128-step GRU (the time-bound case)"),
    Entry(
        "two_in_two_out",
        "multi-input/output",
        (Input("image", (1, 3, 16, 16)), Input("features", (1, 8))),
    ),
    Entry(
        "mlp_module_only",
        "module only",
        (Input("features", (1, 20)),),
        fast=True,
        note="factory returns only the module: inputs inferred from the .npz",
    ),
]

BY_NAME = {e.name: e for e in CORPUS}


def samples(entry: Entry, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` samples per input, each with its batch dim: ``{name: (n, *shape)}``."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for inp in entry.inputs:
        shape = (n, *inp.shape)
        if inp.kind == "ids":
            out[inp.name] = rng.integers(1, inp.vocab, size=shape, dtype=np.int64)
        elif inp.kind == "mask":
            mask = np.ones(shape, np.int64)
            for i in range(1, n, 2):  # every other sample pads its tail, as a batch of sentences would
                mask[i, ..., shape[-1] - 1 - (i % (shape[-1] // 2)) :] = 0
            out[inp.name] = mask
        elif inp.kind == "imu":
            t = np.arange(inp.shape[-2])[None, :, None] / 20.0
            phase = rng.uniform(0, 2 * np.pi, size=(n, 1, inp.shape[-1]))
            freq = rng.uniform(0.5, 3.0, size=(n, 1, inp.shape[-1]))
            x = np.sin(freq * t + phase) + 0.1 * rng.standard_normal((n, inp.shape[-2], inp.shape[-1]))
            out[inp.name] = x.astype(np.float32)[:, None]
        else:
            out[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def write_data(entry: Entry, folder: Path, *, calibration: int = 32, evaluation: int = 48) -> tuple[Path, Path]:
    """The entry's ``calibration.npz`` and ``evaluation.npz`` under ``folder`` (disjoint seeds)."""
    folder.mkdir(parents=True, exist_ok=True)
    cal, ev = folder / "calibration.npz", folder / "evaluation.npz"
    np.savez(cal, **samples(entry, calibration, seed=1))
    np.savez(ev, **samples(entry, evaluation, seed=2))
    return cal, ev


def package_args(
    entry: Entry,
    data: tuple[Path, Path],
    out: Path,
    *,
    backends: str,
    schemes: str | None = None,
    float_fallback: str = "auto",
) -> list[str]:
    """``mpk package`` arguments for one entry (without the program name)."""
    cal, ev = data
    return [
        "package",
        "--float-fallback", float_fallback,
        "--model", entry.factory,
        "--calibration", str(cal),
        "--evaluation", str(ev),
        "--backends", backends,
        "--quantize", schemes or ",".join(entry.schemes),
        "--out", str(out),
        *entry.flags,
    ]  # fmt: skip
