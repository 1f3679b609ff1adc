"""The apps call only runtime APIs the PINNED runtimes have, and their READMEs list exactly those calls.

tests/fixtures/runtime_api/ holds the pinned APIs as declared upstream: Kotlin/Java stubs for ExecuTorch's Android
AAR (v1.4.1) and ONNX Runtime's Java API, each declaration quoting its upstream line (kotlinc type-checks
android_app's runtime/*.kt against them in tests/integration/test_apps_kotlin_contract.py), and name lists for
ExecuTorch's Swift API (v1.4.1) and CoreML (Apple's documentation). Here:

- every runtime name a .kt / .swift file uses must be declared there (a misspelt or removed API fails);
- android_app/README.md and ios_app/README.md list exactly the runtime names used, with the same sources;
- the pins agree: gradle.properties, BenchmarkCore's RuntimeVersions, the SwiftPM branch, and the fixtures' tag;
- given an upstream checkout (``MPK_UPSTREAM_EXECUTORCH`` = a pytorch/executorch git dir), every quoted line is
  found verbatim in the upstream file at the pinned tag (skipped otherwise: CI has no network).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "tests/fixtures/runtime_api"
KT_RUNTIME = ROOT / "android_app/app/src/main/java/org/mpk/bench/runtime"
KT_APP = ROOT / "android_app/app/src/main/java/org/mpk/bench"
SWIFT_APP = ROOT / "ios_app/MpkBenchApp/Sources/MpkBenchApp"
ET_TAG = "v1.4.1"
ET_DIRS = {"kt": "extension/android/executorch_android/src/main/java/org/pytorch/executorch",
           "swift": "extension/apple/ExecuTorch/Exported"}  # fmt: skip

#: language / JDK / Foundation names the runtime glue uses that are no runtime's API
KOTLIN_ALLOWED = {"map", "filter", "toTypedArray", "toList", "zip", "toMap", "forEach", "also", "close", "wrap",
                  "remaining", "absolutePath", "isNotEmpty", "name", "it"}  # fmt: skip
SWIFT_ALLOWED = {"map", "enumerated", "filter", "keys", "sorted", "isEmpty", "count", "path", "lock", "unlock",
                 "update", "finalize", "default", "fileExists", "enumerator", "nextObject", "resourceValues",
                 "isRegularFile", "isRegularFileKey", "standardizedFileURL", "pathComponents", "dropFirst", "sort",
                 "rel", "url", "joined", "utf8", "read", "boolValue", "close", "current", "systemVersion", "name",
                 "dtype", "inputs", "outputs", "backend", "values", "shape", "floatValue", "description", "append",
                 "lexicographicallyPrecedes", "executorch", "coreml", "Runtimes"}  # fmt: skip
SWIFT_FRAMEWORK_NAMES = {"SHA256", "Digest", "FileHandle", "FileManager", "ObjCBool", "Data", "URL", "UIDevice",
                         "NSNumber", "String", "Int64", "Float", "Array", "Int", "Bool", "Double", "Error", "Self",
                         "CustomStringConvertible", "Any"}  # fmt: skip


def _code(text: str) -> str:
    """Source without comments, string literals, package and import lines."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', text)
    return "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith(("package ", "import ")))


def _quoted(path: Path) -> list[tuple[str, str]]:
    """(declaration line of the stub, the upstream line its comment quotes) for a Kotlin/Java stub file."""
    out = []
    for ln in path.read_text().splitlines():
        m = re.match(r"(.*?)//\s*(\w+\.(?:kt|java)):\s(.+)$", ln)
        if m and m.group(1).strip():
            out.append((m.group(1).strip(), m.group(3).strip()))
    return out


def _stub_names() -> set[str]:
    """Every name the Android runtime stubs declare, Java getters also as Kotlin properties (getFoo -> foo)."""
    names: set[str] = set()
    for f in [*API.glob("*.kt"), *(API / "onnxruntime-android").glob("*.java")]:
        for decl, _ in _quoted(f):
            names |= set(re.findall(r"\b(?:fun|val|class|interface|object)\s+(\w+)", decl))
            names |= set(re.findall(r"const val (\w+)", decl))
            for java in re.findall(r"\b(\w+)\s*\(", decl):
                names.add(java)
                if java.startswith("get") and len(java) > 3:
                    names.add(java[3].lower() + java[4:])
            names |= set(re.findall(r"class (\w+)", decl))
    return names - {"public", "static", "throws"}


def _own_names(*dirs: Path, exts: tuple[str, ...]) -> set[str]:
    names: set[str] = set()
    for d in dirs:
        for f in d.rglob("*"):
            if f.suffix in exts:
                t = f.read_text()
                names |= set(re.findall(r"\b(?:val|var|fun|let|func|class|object|struct|enum|case|interface|protocol)"
                                        r"\s+(\w+)", t))  # fmt: skip
                names |= set(re.findall(r"const val (\w+)", t))
                names |= set(re.findall(r"static let (\w+)", t))
    return names


def _kotlin_members() -> set[str]:
    """Names of the app's own members (not locals: declared at most two levels deep, i.e. indent <= 8)."""
    names: set[str] = set()
    for f in KT_APP.rglob("*.kt"):
        for ln in f.read_text().splitlines():
            m = re.match(r"( {0,8})(?:(?:override|private|const|data|open|internal|abstract)\s+)*"
                         r"(?:val|var|fun|class|object|interface)\s+(?:<[^>]*>\s*)?(\w+)", ln)  # fmt: skip
            if m:
                names.add(m.group(2))
            names |= set(re.findall(r"(?:\(|,)\s*val (\w+)", ln))  # constructor properties
    return names


def _kotlin_used() -> set[str]:
    used: set[str] = set()
    for f in KT_RUNTIME.glob("*.kt"):
        code = _code(f.read_text())
        used |= set(re.findall(r"\.\s*([A-Za-z_]\w*)", code))
        used |= {t for t in re.findall(r"\b([A-Z]\w*)\b", code)}
    return used


def _readme_api(readme: Path) -> set[str]:
    text = readme.read_text()
    section = text[text.index("## Runtime APIs used") :]
    section = section[: section.find("\n## ", 3) if "\n## " in section[3:] else len(section)]
    return set(re.findall(r"`([A-Za-z_]\w*)`", section))


def test_android_runtime_glue_uses_only_pinned_api_names() -> None:
    declared = _stub_names()
    own = _kotlin_members() | {"BuildConfig", "EXECUTORCH_VERSION", "ONNXRUNTIME_VERSION"}
    used = _kotlin_used()
    stdlib_types = {"File", "FloatBuffer", "LongBuffer", "FloatArray", "List", "Map", "String", "Int", "LongArray",
                    "Unit", "Any", "ResultKeys", "EXECUTORCH", "ONNXRUNTIME", "Runtimes", "Boolean",
                    "MutableMap"}  # fmt: skip
    unknown = used - declared - own - KOTLIN_ALLOWED - stdlib_types
    assert not unknown, f"runtime/*.kt uses names the pinned ExecuTorch / ONNX Runtime APIs do not declare: {unknown}"
    # the check can fail: a call the pinned ONNX Runtime Java API lacks
    assert "version" not in declared and "getVersion" not in declared


def test_android_readme_lists_exactly_the_runtime_names_used() -> None:
    runtime_used = (_kotlin_used() & _stub_names()) - KOTLIN_ALLOWED
    listed = _readme_api(ROOT / "android_app/README.md")
    assert listed == runtime_used, (
        f"README lists {sorted(listed - runtime_used)}, misses {sorted(runtime_used - listed)}"
    )


def _swift_lists() -> dict[str, set[str]]:
    out = {}
    for name in ("executorch-swift-v1.4.1.txt", "coreml-ios17.txt"):
        rows = [ln.split("|") for ln in (API / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        out[name] = {r[0].strip() for r in rows}
    return out


def _swift_used() -> set[str]:
    used: set[str] = set()
    for f in SWIFT_APP.glob("Runners.swift"):
        code = _code(f.read_text())
        used |= set(re.findall(r"\.\s*([A-Za-z_]\w*)", code))
        used |= set(re.findall(r"\b([A-Z]\w*)\b", code))
        used |= set(re.findall(r"\b(\w+):\s", code)) & {"filePath", "multiArray"}  # argument labels that are API
    return used


def test_ios_runners_use_only_pinned_api_names() -> None:
    lists = _swift_lists()
    declared = set().union(*lists.values())
    own = _own_names(ROOT / "ios_app", exts=(".swift",))
    unknown = _swift_used() - declared - own - SWIFT_ALLOWED - SWIFT_FRAMEWORK_NAMES
    assert not unknown, f"Runners.swift uses names neither ExecuTorch v1.4.1 nor CoreML declares: {unknown}"


def test_ios_readme_lists_exactly_the_runtime_names_used() -> None:
    declared = set().union(*_swift_lists().values())
    used = _swift_used() & declared
    listed = _readme_api(ROOT / "ios_app/README.md")
    assert listed == used, f"README lists {sorted(listed - used)}, misses {sorted(used - listed)}"


def test_pins_agree_everywhere() -> None:
    props = dict(re.findall(r"^(mpk\.\w+)=(.+)$", (ROOT / "android_app/gradle.properties").read_text(), re.M))
    et = props["mpk.executorchVersion"]
    assert ET_TAG == f"v{et}" and (API / f"executorch-android-v{et}.kt").is_file()
    swift_pkg = (ROOT / "ios_app/MpkBenchApp/Package.swift").read_text()
    assert f'branch: "swiftpm-{et}"' in swift_pkg and ".iOS(.v17)" in swift_pkg
    assert f'public static let executorch = "{et}"' in (ROOT / "ios_app/Sources/BenchmarkCore/Compat.swift").read_text()
    buildconfig = (API / "android-buildconfig.java").read_text()
    assert f'EXECUTORCH_VERSION = "{et}"' in buildconfig
    assert f'ONNXRUNTIME_VERSION = "{props["mpk.onnxruntimeVersion"]}"' in buildconfig
    # what mpk exports with must be loadable by what the apps link (runners/compat.py's rule)
    from importlib import metadata

    from runners.compat import check

    exported = metadata.version("executorch")
    req = {"runtime": "executorch", "min_version": ".".join(exported.split(".")[:2]) + ".0", "file_identifier": "ET12"}
    assert check(req, {"executorch": et}).loadable is True, (exported, et)
    onnx_req = {"runtime": "onnxruntime", "min_version": "1.18", "ir_version": 10, "opsets": {"": 20, "ai.onnx.ml": 5}}
    assert check(onnx_req, {"onnxruntime": props["mpk.onnxruntimeVersion"]}).loadable is True


@pytest.mark.skipif(not os.environ.get("MPK_UPSTREAM_EXECUTORCH"), reason="set MPK_UPSTREAM_EXECUTORCH=<git dir>")
def test_quoted_executorch_lines_are_upstream_at_the_tag() -> None:
    git = os.environ["MPK_UPSTREAM_EXECUTORCH"]

    def show(path: str) -> str:
        r = subprocess.run(["git", "--git-dir", git, "show", f"refs/tags/{ET_TAG}:{path}"], capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return " ".join(r.stdout.split())

    for ln in (API / f"executorch-android-{ET_TAG}.kt").read_text().splitlines():
        m = re.search(r"//\s*(\w+\.kt):\s(.+)$", ln)
        if m and not ln.strip().startswith("//"):
            assert " ".join(m.group(2).split()) in show(f"{ET_DIRS['kt']}/{m.group(1)}"), ln
    for ln in (API / f"executorch-swift-{ET_TAG}.txt").read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            _, file, quote = (p.strip() for p in ln.split("|", 2))
            assert " ".join(quote.split()) in show(f"{ET_DIRS['swift']}/{file}"), ln
