"""Build the on-device benchmark apps (android_app/, ios_app/) from Python or ``mpk apps build``."""

from runners.apps.android_build import build_android, build_ios, check_android_toolchain

__all__ = ["build_android", "build_ios", "check_android_toolchain"]
