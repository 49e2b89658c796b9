"""Paths of the shared real test assets (never copied into the repository)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
DARKNET = ASSETS / "darknet"
CFG = DARKNET / "cfg"
NAMES = DARKNET / "data" / "coco.names"
IMAGES = DARKNET / "data"
FASTEST = DARKNET / "yolo-fastest-1.1_coco"
FASTEST_XL_CFG = FASTEST / "yolo-fastest-1.1-xl.cfg"
FASTEST_XL_WEIGHTS = FASTEST / "yolo-fastest-1.1-xl.weights"
COCO = ASSETS / "coco_val2017"
VIDEO = ASSETS / "video"
MOT = ASSETS / "mot"
