"""The Android project's files are what Gradle and the Android tools will read: well-formed, consistent, pinned.

Checked without an SDK: every XML file under android_app/ parses (a manifest whose ``<activity`` tag was never
closed broke every build unnoticed), the manifest declares what mpk starts, and the committed Gradle wrapper is a
real wrapper jar pinned to a checksummed Gradle that the pinned Android Gradle Plugin accepts.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android_app"
ANDROID = "{http://schemas.android.com/apk/res/android}"
#: AGP minor -> the oldest Gradle it runs on (developer.android.com, "Android Gradle plugin <v> release notes")
AGP_MIN_GRADLE = {"8.5": (8, 7), "8.6": (8, 7), "8.7": (8, 9), "8.8": (8, 10, 2), "8.9": (8, 11, 1)}
XML_FILES = sorted(p for p in APP.rglob("*.xml") if "build" not in p.relative_to(APP).parts)


def test_there_are_xml_files_to_check() -> None:
    assert APP / "app/src/main/AndroidManifest.xml" in XML_FILES and len(XML_FILES) >= 2


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: str(p.relative_to(APP)))
def test_every_xml_file_parses(path: Path) -> None:
    ElementTree.parse(path)  # raises ParseError with line and column on malformed XML


def test_manifest_declares_the_activity_mpk_starts() -> None:
    root = ElementTree.parse(APP / "app/src/main/AndroidManifest.xml").getroot()
    acts = root.findall("application/activity")
    assert [a.get(f"{ANDROID}name") for a in acts] == [".BenchmarkActivity"]
    act = acts[0]
    assert act.get(f"{ANDROID}exported") == "true"  # `am start -n org.mpk.bench/.BenchmarkActivity` from adb
    assert "android.intent.action.MAIN" in {a.get(f"{ANDROID}name") for a in act.iter("action")}
    gradle = (APP / "app/build.gradle.kts").read_text()
    assert 'namespace = "org.mpk.bench"' in gradle and 'applicationId = "org.mpk.bench"' in gradle
    # the release build must stay debuggable: mpk reads results with `run-as org.mpk.bench`
    assert re.search(r"release \{[^}]*isDebuggable = true", gradle, re.S)


def test_version_name_carries_the_linked_runtimes() -> None:
    """mpk bench reads the runtimes from versionName (dumpsys package) before pushing anything."""
    from runners.compat import parse_app_version_name

    gradle = (APP / "app/build.gradle.kts").read_text()
    props = dict(re.findall(r"^(mpk\.\w+)=(.+)$", (APP / "gradle.properties").read_text(), re.M))
    template = re.search(r'versionName = "([^"]+)"', gradle).group(1)
    rendered = template.replace("$executorchVersion", props["mpk.executorchVersion"]).replace(
        "$onnxruntimeVersion", props["mpk.onnxruntimeVersion"]
    )
    dumpsys = f"  Packages:\n    versionCode=1 minSdk=26 targetSdk=35\n    versionName={rendered}\n"
    assert parse_app_version_name(dumpsys) == {
        "executorch": props["mpk.executorchVersion"],
        "onnxruntime": props["mpk.onnxruntimeVersion"],
    }


def test_gradle_wrapper_is_committed_and_pinned() -> None:
    jar = APP / "gradle/wrapper/gradle-wrapper.jar"
    with zipfile.ZipFile(jar) as z:
        assert z.testzip() is None
        assert "org/gradle/wrapper/GradleWrapperMain.class" in z.namelist()
        # this wrapper verifies distributionSha256Sum (the property is read by WrapperExecutor)
        assert b"distributionSha256Sum" in z.read("org/gradle/wrapper/WrapperExecutor.class")
    props = dict(
        ln.split("=", 1)
        for ln in (APP / "gradle/wrapper/gradle-wrapper.properties").read_text().splitlines()
        if "=" in ln and not ln.startswith("#")
    )
    m = re.fullmatch(
        r"https\\://services\.gradle\.org/distributions/gradle-([0-9.]+)-bin\.zip", props["distributionUrl"]
    )
    assert m, props["distributionUrl"]
    gradle = tuple(int(x) for x in m.group(1).split("."))
    assert re.fullmatch(r"[0-9a-f]{64}", props["distributionSha256Sum"])
    agp = re.search(r'id\("com\.android\.application"\) version "([0-9.]+)"', (APP / "build.gradle.kts").read_text())
    assert agp, "the AGP version is pinned in android_app/build.gradle.kts"
    minor = ".".join(agp.group(1).split(".")[:2])
    assert gradle >= AGP_MIN_GRADLE[minor], f"AGP {agp.group(1)} needs Gradle >= {AGP_MIN_GRADLE[minor]}"
    for script in ("gradlew", "gradlew.bat"):
        assert "org.gradle.wrapper.GradleWrapperMain" in (APP / script).read_text()
    assert (APP / "gradlew").stat().st_mode & 0o111, "gradlew must be executable"
