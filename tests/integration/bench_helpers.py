"""Tiny real artifacts for the bench tests: one ONNX and one ExecuTorch program of a 5-class conv net.

Built once per torch version and cached on disk (MPK_CACHE_DIR), because
exporting costs seconds on 2 cores while the tests themselves need only the
files. The manifest next to them is written by mpk's own writer
(:func:`mpk.contract.write_manifest`), so it is schema-valid like one from ``mpk package``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from mpk.contract import write_manifest

INPUT_SHAPE = (1, 3, 16, 16)
SAMPLES = 4


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()


def _export(out: Path) -> None:
    import torch
    from executorch.exir import to_edge

    model = _model()
    example = (torch.randn(*INPUT_SHAPE),)
    torch.onnx.export(model, example, str(out / "tiny-fp32.onnx"), input_names=["image"], output_names=["logits"],
                      dynamo=False)  # fmt: skip
    ep = torch.export.export(model, example)
    (out / "tiny-fp32.pte").write_bytes(to_edge(ep).to_executorch().buffer)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, *INPUT_SHAPE)).astype(np.float32)
    with torch.no_grad():
        y = np.stack([model(torch.from_numpy(s)).numpy() for s in x])
    np.savez(out / "reference.npz", **{"input:image": x, "output:logits": y})


def tiny_package(dest: Path) -> Path:
    """Copy the cached tiny package into ``dest`` and return its manifest path."""
    import torch

    cache = Path(os.environ.get("MPK_CACHE_DIR", ".mpk-cache/tests")) / f"bench-tiny-{torch.__version__}"
    if not (cache / "reference.npz").exists():
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        _export(tmp)
        if cache.exists():
            shutil.rmtree(cache)
        tmp.rename(cache)
    dest.mkdir(parents=True, exist_ok=True)
    for f in cache.iterdir():
        shutil.copy2(f, dest / f.name)
    tensor_in = {"name": "image", "shape": list(INPUT_SHAPE), "dtype": "float32"}
    tensor_out = {"name": "logits", "shape": [1, 5], "dtype": "float32"}
    arts = []
    for backend, fname in (("onnx", "tiny-fp32.onnx"), ("executorch", "tiny-fp32.pte")):
        p = dest / fname
        arts.append({"id": f"{backend}-fp32", "backend": backend, "scheme": "fp32", "path": fname, "sha256": _sha(p),
                     "size_bytes": p.stat().st_size, "compressed_size_bytes": p.stat().st_size, "extra_files": [],
                     "inputs": [tensor_in], "outputs": [tensor_out], "delegation": None, "op_summary": {},
                     "verification": {"status": "passed", "passed": True, "reason": None, "metrics": {},
                                      "tolerances": {}, "samples": SAMPLES}})  # fmt: skip
    data = {"source": "seeded random", "count": SAMPLES, "synthetic": True}
    manifest = {
        "schema_version": "mpk.manifest/1", "mpk_version": "0.1.0", "created_utc": "2026-01-01T00:00:00Z",
        "model": {"name": "tiny", "source": {"kind": "builtin", "spec": "tiny"}, "sha256": "0" * 64,
                  "task": "classification", "num_classes": 5, "parameters": 269},
        "inputs": [tensor_in], "outputs": [tensor_out], "recipe": {},
        "data": {"calibration": data, "evaluation": {**data, "labelled": False}},
        "reference": {"path": "reference.npz", "sha256": _sha(dest / "reference.npz"), "samples": SAMPLES},
        "artifacts": arts, "failures": [],
        "environment": {"python": "3.11", "platform": "test", "libraries": {}, "git_revision": None},
    }  # fmt: skip
    return write_manifest(dest / "manifest.json", manifest)
