"""Debian's ``aapt`` compiles the app's manifest and resources against Debian's Android framework resources.

Real tools, no SDK: ``aapt package`` resolves every ``@android:`` reference (the theme), every app resource
(``@string/app_name``) and every manifest attribute against ``framework-res.apk`` from ``android-framework-res``,
and writes a resource APK; ``aapt dump`` reads it back. The package attribute is injected from build.gradle.kts's
``namespace``, exactly what the Android Gradle Plugin's manifest merger does (the source manifest has none).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android_app/app"
FRAMEWORK = Path("/usr/share/android-framework-res/framework-res.apk")

pytestmark = pytest.mark.skipif(
    not (shutil.which("aapt") and FRAMEWORK.is_file()),
    reason="needs Debian's aapt and android-framework-res (apt-get install aapt android-framework-res)",
)


def _gradle(key: str) -> str:
    text = (APP / "build.gradle.kts").read_text()
    m = re.search(rf"\b{key} = ([^\n]+)", text)
    assert m, key
    return m.group(1).strip().strip('"')


def _package(manifest: Path, out: Path) -> subprocess.CompletedProcess[str]:
    props = dict(re.findall(r"^(mpk\.\w+)=(.+)$", (APP.parent / "gradle.properties").read_text(), re.M))
    version_name = _gradle("versionName").replace("$executorchVersion", props["mpk.executorchVersion"])
    version_name = version_name.replace("$onnxruntimeVersion", props["mpk.onnxruntimeVersion"])
    argv = ["aapt", "package", "-f", "-M", str(manifest), "-S", str(APP / "src/main/res"), "-I", str(FRAMEWORK),
            "-F", str(out), "--min-sdk-version", _gradle("minSdk"), "--target-sdk-version", _gradle("targetSdk"),
            "--version-code", _gradle("versionCode"), "--version-name", version_name]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _with_package(tmp: Path, text: str) -> Path:
    ns = _gradle("namespace")
    merged = tmp / "AndroidManifest.xml"
    merged.write_text(text.replace("<manifest ", f'<manifest package="{ns}" ', 1))
    return merged


def test_manifest_and_resources_compile_against_the_framework(tmp_path: Path) -> None:
    merged = _with_package(tmp_path, (APP / "src/main/AndroidManifest.xml").read_text())
    r = _package(merged, tmp_path / "res.apk")
    assert r.returncode == 0, r.stderr
    badging = subprocess.run(["aapt", "dump", "badging", str(tmp_path / "res.apk")], capture_output=True, text=True,
                             timeout=60, check=True).stdout  # fmt: skip
    assert "package: name='org.mpk.bench'" in badging
    assert "launchable-activity: name='org.mpk.bench.BenchmarkActivity'" in badging
    assert "application-label:'mpk bench'" in badging  # @string/app_name resolved from res/values
    assert re.search(r"versionName='0\.1\.0 \(executorch [0-9.]+; onnxruntime [0-9.]+\)'", badging)
    tree = subprocess.run(["aapt", "dump", "xmltree", str(tmp_path / "res.apk"), "AndroidManifest.xml"],
                          capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert re.search(r"android:theme\(0x01010000\)=@0x01", tree), "the theme resolves to a framework resource"
    assert re.search(r"android:exported\(0x01010010\)=\(type 0x12\)0xffffffff", tree)


def test_aapt_rejects_what_the_old_manifest_had(tmp_path: Path) -> None:
    """The check can fail: the unclosed <activity tag, and a framework resource that does not exist."""
    text = (APP / "src/main/AndroidManifest.xml").read_text()
    broken = text.replace('android:launchMode="singleTask">', 'android:launchMode="singleTask"')
    assert broken != text
    r = _package(_with_package(tmp_path, broken), tmp_path / "a.apk")
    assert r.returncode != 0
    missing = text.replace("Theme.DeviceDefault.NoActionBar", "Theme.NoSuchTheme")
    (tmp_path / "b").mkdir()
    r = _package(_with_package(tmp_path / "b", missing), tmp_path / "b.apk")
    assert r.returncode != 0 and "Theme.NoSuchTheme" in r.stderr
