"""The conformance corpus's CI subset: packaged by ``mpk package`` in its own process, exactly as an app team runs it.

Five entries, the smallest that cover what issue 14 added: a factory that returns only its module (inputs from the
``.npz``), a dynamic batch declared with ``--input-shape`` on a batch-1 example, a BERT-like encoder with int64
token ids and an attention mask (int8 on ExecuTorch and ONNX, CoreML conversion), a Llama-like decoder
(per-token agreement), and DistilBERT on ONNX (a pre-processed graph ONNX Runtime refuses).
``bench/conformance.py`` runs the whole corpus. Nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.conformance import run_entry
from tests.conformance.corpus import BY_NAME

CASES = [
    ("mlp_module_only", "executorch,onnx"),
    ("cnn_dynamic_batch", "executorch,onnx"),
    ("bert", "executorch,onnx,coreml"),
    ("llama", "executorch,onnx"),
    # ORT's quant_pre_process writes a DistilBERT graph ORT then refuses to load ("Attempt to replace the existing
    # tensor"); the exporter notices and pre-processes again without the fusions
    ("distilbert", "onnx"),
]


@pytest.mark.parametrize(("name", "backends"), CASES, ids=[c[0] for c in CASES])
def test_corpus_entry_packages_and_verifies(name: str, backends: str, tmp_path: Path) -> None:
    run = run_entry(BY_NAME[name], tmp_path, backends, None, timeout=1500, cal=16, ev=16, fallback="auto")
    log = (tmp_path / name / "log.txt").read_text()
    assert not run.traceback, log[-3000:]
    assert run.exit_code in (0, 1), log[-3000:]  # 1 = a tolerance missed: the cells below say which
    for cell in run.cells:
        if cell.backend == "coreml":
            # off macOS: built and structure-checked, or a failure that names the operator and coremltools' version
            assert cell.status == "built" or "cannot convert operator" in cell.reason, (cell, log[-2000:])
            continue
        assert cell.status == "ok", (cell, log[-2000:])
    manifest = json.loads((tmp_path / name / "pkg" / "manifest.json").read_text())
    if name == "mlp_module_only":
        assert [(i["name"], i["shape"], i["dtype"]) for i in manifest["inputs"]] == [("features", [1, 20], "float32")]
    if name == "cnn_dynamic_batch":
        assert manifest["inputs"][0]["shape"] == ["batch", 3, 32, 32]
        for a in manifest["artifacts"]:
            assert a["verification"]["batched"]["batch"] == 4, a["id"]  # a batch > 1 was run and compared
    if name == "bert":
        assert [i["dtype"] for i in manifest["inputs"]] == ["int64", "int64"]
        coreml = [a for a in manifest["artifacts"] if a["backend"] == "coreml"]
        assert all(i["dtype"] == "int32" for a in coreml for i in a["inputs"])
    if name == "llama":
        assert manifest["model"]["task"] == "language-model"
        m = next(a for a in manifest["artifacts"] if a["id"] == "onnx-fp32")["verification"]["metrics"]
        assert m["top1_decisions"] == 16 * 16  # per token: 16 samples x 16 positions
