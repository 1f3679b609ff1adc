"""``mpk apps build [android|ios]``: thin wrappers over runners.apps.android_build."""

from __future__ import annotations

import click


@click.group("apps")
def apps() -> None:
    """Build the on-device benchmark apps (Android, iOS)."""


@apps.command("build")
@click.argument("platform", type=click.Choice(["android", "ios"]))
@click.option("--variant", type=click.Choice(["release", "debug"]), default="release", show_default=True,
              help="Android build type (both are debuggable so mpk can read results with run-as).")  # fmt: skip
def build(platform: str, variant: str) -> None:
    """Build the Android APK (Android SDK + JDK 17) or the iOS package's BenchmarkCore (a Swift toolchain).

    Exit 4 with the list of what is missing when the toolchain is not there.
    """
    from runners.apps.android_build import build_android, build_ios

    if platform == "android":
        apk = build_android(variant)
        click.echo(str(apk))
        click.echo(f"install: adb install -r {apk}", err=True)
    else:
        click.echo(str(build_ios()))
