"""Tiny models and datasets for the exporter tests (not collected: no ``test_`` prefix).

Small enough that an export takes seconds on 2 shared cores, big enough that
int8 weights visibly shrink the file (~25k parameters).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from packager.types import Dataset, LoadedModel, TensorSpec


class ConvNet(torch.nn.Module):
    """2 conv + linear. Pooling as ``mean(keepdim=True)``: the form XNNPACK delegates."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 64, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1))


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(64, 128)
        self.b = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class CumsumNet(ConvNet):
    """ConvNet plus ``cumsum``, which XNNPACK has no kernel for: it must stay on portable kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(super().forward(x), dim=1)


class DataDependent(torch.nn.Module):
    """Python ``if`` on a tensor value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class DWNet(torch.nn.Module):
    """A stem conv and three depthwise-separable blocks with ReLU6: the layer shapes of a mobile CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.blocks = torch.nn.ModuleList()
        for _ in range(3):
            self.blocks.append(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16))
            self.blocks.append(torch.nn.Conv2d(16, 16, 1))
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.relu6(self.stem(x))
        for block in self.blocks:
            x = torch.nn.functional.relu6(block(x))
        return self.fc(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1))


def loaded(module: torch.nn.Module, shape: tuple[int, ...], name: str, in_name: str = "x") -> LoadedModel:
    torch.manual_seed(0)
    module.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        y = module(x)
    return LoadedModel(
        name=name,
        module=module,
        example_inputs=(x,),
        inputs=[TensorSpec(in_name, tuple(shape))],
        outputs=[TensorSpec("logits", tuple(y.shape))],
        source={"kind": "module", "spec": f"tests.integration.export_models:{type(module).__name__}"},
        sha256="0" * 64,
    )


def conv_net() -> LoadedModel:
    torch.manual_seed(0)
    return loaded(ConvNet(), (1, 3, 32, 32), "convnet", in_name="image")


def mlp() -> LoadedModel:
    torch.manual_seed(0)
    return loaded(MLP(), (1, 64), "mlp")


def calibration(shape: tuple[int, ...], n: int = 8, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    samples = [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]
    return Dataset(samples=samples, source="random-normal", synthetic=True)


def torch_out(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.module(torch.from_numpy(x)).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`mpk.metrics.cosine` of all of ``a``'s values as one sample against ``b``'s."""
    from mpk.metrics import cosine as metric

    return metric(np.asarray(a).reshape(1, -1), np.asarray(b).reshape(1, -1))


def bias_reports(plain: Any, fixed: Any, *, layers: int, samples: int) -> dict[str, Any]:
    """Check the bias-correction reports of an int8 export with the switch off and on; return the second."""
    assert plain.details["quantizer"]["bias_correction"] == {
        "applied": False,
        "reason": "turned off (bias_correction: false)",
    }
    report = fixed.details["quantizer"]["bias_correction"]
    assert report["layers"] == layers and report["layers_left_out"] == 0 and report["samples"] == samples, report
    assert report["applied"] is (report["output_cosine_after"] > report["output_cosine_before"]), report
    return report
