"""Where edgeseg's own files are: the package folder and the bundled CamVid sample (the default --data of eval,
bench and check). Every layer may import this; it imports nothing of edgeseg."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DATA = PACKAGE_DIR / "assets" / "sample" / "camvid"
