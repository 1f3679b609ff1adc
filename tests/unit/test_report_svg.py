"""The accuracy-vs-latency scatter: labels of points that sit close together must not print over each other."""

from __future__ import annotations

import re

from runners.report.svg import scatter

LABEL = re.compile(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(start|end)" fill="#222">([^<]*)</text>')


def _labels(svg: str) -> list[tuple[float, float, str, str]]:
    return [(float(x), float(y), anchor, text) for x, y, anchor, text in LABEL.findall(svg)]


def test_close_points_get_separate_label_rows() -> None:
    # int8 and fp32 of two backends on two devices: near-identical latency and accuracy, as in the demo
    points = [
        ("host / executorch-int8", 7.75, 0.9921),
        ("host / onnx-int8", 7.80, 0.9922),
        ("pixel-7 / executorch-int8", 7.70, 0.9920),
        ("host / executorch-fp32", 9.87, 1.0),
        ("host / onnx-fp32", 9.90, 1.0),
        ("pixel-7 / executorch-fp32", 9.85, 1.0),
    ]
    svg = scatter(points, xlabel="p50 latency, ms", ylabel="cosine", width=600, height=360)
    labels = _labels(svg)
    assert sorted(t for *_, t in labels) == sorted(p[0] for p in points)
    for i, a in enumerate(labels):
        assert 0 < a[1] < 360, a  # inside the drawing
        for b in labels[i + 1 :]:
            same_side = a[2] == b[2] and abs(a[0] - b[0]) < 150
            assert not same_side or abs(a[1] - b[1]) >= 12, (a, b)
    # a label moved away from its point is tied to it by a leader line
    assert svg.count("<line") > 2


def test_a_lone_point_keeps_its_label_beside_it() -> None:
    svg = scatter([("host / onnx-int8", 5.0, 0.99)], xlabel="ms", ylabel="cosine")
    ((x, y, _anchor, text),) = _labels(svg)
    circle = re.search(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert circle and text == "host / onnx-int8"
    assert abs(y - (float(circle.group(2)) - 8)) < 0.5 and abs(x - float(circle.group(1))) <= 7.5
