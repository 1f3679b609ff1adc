"""Build the Android benchmark app with its Gradle wrapper, or say exactly what is missing.

Three things are needed and each is checked before Gradle starts, so the user
gets one message listing everything to fix (exit 4, infrastructure):

- an Android SDK: ``ANDROID_HOME`` or ``ANDROID_SDK_ROOT`` (or ``sdk.dir`` in
  android_app/local.properties) pointing at an existing directory,
- a JDK 17 or newer (``JAVA_HOME``, else ``java`` and ``javac`` on PATH),
- android_app/gradle/wrapper/gradle-wrapper.jar, committed with the app (written by
  Debian's gradle 4.4.1; it downloads the pinned, checksummed Gradle 8.10.2).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mpk.errors import InfraError, RuntimeMissing

ROOT = Path(__file__).resolve().parent.parent.parent
ANDROID_APP = ROOT / "android_app"
IOS_APP = ROOT / "ios_app"
MIN_JDK = 17
VARIANTS = {"release": "assembleRelease", "debug": "assembleDebug"}


@dataclass(frozen=True)
class Toolchain:
    sdk: Path | None
    java: Path | None
    jdk_major: int | None
    wrapper_jar: Path
    problems: tuple[str, ...]


def _sdk_dir(app_dir: Path, env: dict[str, str]) -> tuple[Path | None, str | None]:
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        if env.get(var):
            p = Path(env[var])
            return (p, None) if p.is_dir() else (None, f"{var}={p} is not a directory")
    props = app_dir / "local.properties"
    if props.is_file():
        m = re.search(r"^sdk\.dir=(.+)$", props.read_text(), re.M)
        if m and Path(m.group(1).strip()).is_dir():
            return Path(m.group(1).strip()), None
    return None, None


def _jdk(env: dict[str, str]) -> tuple[Path | None, int | None, str | None]:
    home = env.get("JAVA_HOME")
    if home:
        java, javac = Path(home) / "bin" / "java", Path(home) / "bin" / "javac"
        if not (java.exists() and javac.exists()):
            return None, None, f"JAVA_HOME={home} has no bin/java and bin/javac (a JRE is not enough; need a JDK)"
    else:
        found, javac_found = shutil.which("java", path=env.get("PATH")), shutil.which("javac", path=env.get("PATH"))
        if not found or not javac_found:
            return None, None, None
        java = Path(found)
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, None, f"{java} -version failed: {e}"
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(m.group(1)) if m else None
    if major == 1 and m and m.group(2):  # "1.8.0" style
        major = int(m.group(2))
    return java, major, None


def check_android_toolchain(app_dir: Path = ANDROID_APP, env: dict[str, str] | None = None) -> Toolchain:
    """Everything needed to run ``./gradlew assemble*``; ``problems`` says what is missing and how to get it."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    sdk, bad_sdk = _sdk_dir(app_dir, env)
    if sdk is None:
        problems.append(
            (bad_sdk or "no Android SDK: ANDROID_HOME / ANDROID_SDK_ROOT are not set")
            + " -- install the SDK (Android Studio, or the command-line tools: sdkmanager "
            "'platforms;android-35' 'build-tools;35.0.0' 'platform-tools') and export ANDROID_HOME=/path/to/sdk"
        )
    java, major, bad_jdk = _jdk(env)
    if java is None:
        problems.append(
            (bad_jdk or "no JDK: JAVA_HOME is not set and java/javac are not on PATH")
            + f" -- install JDK {MIN_JDK}+ (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)"
        )
    elif major is not None and major < MIN_JDK:
        problems.append(f"JDK {major} at {java} is too old -- the Android Gradle plugin needs JDK {MIN_JDK}+")
    jar = app_dir / "gradle" / "wrapper" / "gradle-wrapper.jar"
    if not jar.is_file():
        rel = jar.relative_to(app_dir.parent)
        problems.append(
            f"{rel} is missing (it is committed) -- restore it with `git checkout -- {rel}` "
            f"or regenerate it in {app_dir} with `gradle wrapper --gradle-version 8.10.2`"
        )
    return Toolchain(sdk, java, major, jar, tuple(problems))


def build_android(
    variant: str = "release", *, app_dir: Path = ANDROID_APP, env: dict[str, str] | None = None, timeout_s: float = 3600
) -> Path:
    """Run ``./gradlew assembleRelease`` (or ``assembleDebug``) and return the APK's path.

    Raises RuntimeMissing (exit 4) listing every missing prerequisite, or InfraError when Gradle fails.
    """
    if variant not in VARIANTS:
        from mpk.errors import UsageError

        raise UsageError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    tc = check_android_toolchain(app_dir, env)
    if tc.problems:
        raise RuntimeMissing(
            "cannot build the Android app here:\n  - " + "\n  - ".join(tc.problems),
            hint="see android_app/README.md",
        )
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("ANDROID_HOME", str(tc.sdk))
    if tc.java is not None and "JAVA_HOME" not in run_env:
        run_env["JAVA_HOME"] = str(tc.java.resolve().parent.parent)
    try:
        p = subprocess.run(["./gradlew", VARIANTS[variant]], cwd=app_dir, env=run_env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InfraError(f"gradle {VARIANTS[variant]} did not finish within {timeout_s:.0f} s") from None
    if p.returncode != 0:
        raise InfraError(f"gradle {VARIANTS[variant]} failed (exit {p.returncode}); see its output above")
    apk = app_dir / "app" / "build" / "outputs" / "apk" / variant / f"app-{variant}.apk"
    if not apk.is_file():
        raise InfraError(f"gradle succeeded but {apk} was not produced")
    return apk


def _swift_toolchain() -> str | None:
    """``swift`` on PATH when it is Apple's/swift.org's compiler (Debian's ``swift`` is OpenStack's client)."""
    swift = shutil.which("swift")
    if not swift:
        return None
    try:
        out = subprocess.run([swift, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return swift if "Swift version" in out else None


def build_ios(*, app_dir: Path = IOS_APP, timeout_s: float = 3600) -> Path:
    """Compile and test the iOS package's BenchmarkCore with SwiftPM; returns the package dir.

    BenchmarkCore has no dependencies, so any Swift toolchain builds it (macOS, or Linux from swift.org). The app
    (ios_app/MpkBenchApp) is signed and archived from Xcode (ios_app/README.md): SwiftPM cannot produce a signed
    .app, and signing identities are the user's.
    """
    swift = _swift_toolchain()
    if swift is None:
        raise RuntimeMissing(
            "building the iOS package needs a Swift toolchain (`swift build`); none is on PATH here",
            hint="on a Mac install Xcode; on Linux a toolchain from swift.org (Debian's `swift` package is "
            "OpenStack's client). The app itself needs Xcode (ios_app/README.md)",
        )
    for argv in ([swift, "build", "--package-path", str(app_dir)], [swift, "test", "--package-path", str(app_dir)]):
        try:
            p = subprocess.run(argv, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise InfraError(f"swift {argv[1]} did not finish within {timeout_s:.0f} s") from None
        if p.returncode != 0:
            raise InfraError(f"swift {argv[1]} failed (exit {p.returncode})")
    return app_dir
