"""One kotlinc run for all the Android app's Kotlin that can compile off Android (not collected: no ``test_``).

Compiled together, so kotlinc's ~30 s start-up is paid once per source hash:

- ``contract/`` (platform-independent: stats, accuracy, spec, results, the measuring order, compat, sha256),
- ``runtime/`` (the ExecuTorch / ONNX Runtime glue), type-checked against stubs of the PINNED runtime APIs in
  tests/fixtures/runtime_api/ (each declaration quotes the upstream line it stands for) and of AGP's BuildConfig,
- ``jvm-harness/Harness.kt``, which the tests drive over stdin/stdout.

Only ``BenchmarkActivity.kt`` and ``device/`` need Android classes and are left out. The jar is cached under
pytest's cache directory keyed by the sha256 of every input and the kotlinc version, so an unchanged tree
compiles once; a fresh clone (CI) compiles once per session.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android_app/app/src/main/java/org/mpk/bench"
API = ROOT / "tests/fixtures/runtime_api"


def sources() -> list[Path]:
    return [
        *sorted((APP / "contract").glob("*.kt")),
        *sorted((APP / "runtime").glob("*.kt")),
        ROOT / "android_app/jvm-harness/Harness.kt",
        *sorted(API.glob("*.kt")),
        *sorted(API.rglob("*.java")),
    ]


def _kotlinc_version() -> str:
    r = subprocess.run(["kotlinc", "-version"], capture_output=True, text=True, timeout=120, check=False)
    return (r.stdout + r.stderr).strip()


def compile_jar(dest: Path, srcs: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    """kotlinc ``srcs`` into ``dest`` (with the Kotlin runtime, so ``java -jar`` runs it)."""
    return subprocess.run(["kotlinc", *map(str, srcs or sources()), "-include-runtime", "-d", str(dest)],
                          capture_output=True, text=True, timeout=400, check=False)  # fmt: skip


def harness_jar(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    srcs = sources()
    h = hashlib.sha256(_kotlinc_version().encode())
    for p in srcs:
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    key = h.hexdigest()[:24]
    cache = getattr(config, "cache", None)
    cache_dir = Path(cache.mkdir("mpk-kotlinc")) if cache is not None else tmp_path_factory.mktemp("kotlinc")
    jar = cache_dir / f"harness-{key}.jar"
    if jar.is_file():
        return jar
    tmp = tmp_path_factory.mktemp("kt") / "harness.jar"
    p = compile_jar(tmp, srcs)
    assert p.returncode == 0, p.stderr[-4000:]
    for old in cache_dir.glob("harness-*.jar"):  # keep one jar, not one per edit
        old.unlink(missing_ok=True)
    shutil.move(str(tmp), jar)
    return jar
