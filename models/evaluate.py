"""COCO mAP of a detector on an annotated image folder, scored by pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Dict, List


from .errors import ModelError

log = logging.getLogger(__name__)

# darknet's 80 COCO classes in order -> COCO category ids (the standard 91-id numbering)
COCO80_TO_91 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
                31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
                56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
                85, 86, 87, 88, 89, 90)


def _load_coco(path: Path):
    from pycocotools.coco import COCO  # noqa: PLC0415

    if not Path(path).is_file():
        raise ModelError(f"annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: not a COCO annotation file ({e})")


def detections_to_coco(dets, image_id: int, num_classes: int) -> List[Dict]:
    """Detections -> COCO result dicts with [x, y, w, h] boxes."""
    cat = COCO80_TO_91 if num_classes == 80 else tuple(range(1, num_classes + 1))
    out = []
    for b, s, c in zip(dets.xyxy.astype(float), dets.score.astype(float), dets.class_id):
        out.append({"image_id": image_id, "category_id": cat[int(c)],
                    "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                    "score": round(s, 5)})
    return out


def evaluate_coco(detector, ann_file: Path, image_dir: Path, limit: int = 0) -> Dict:
    """Run `detector` on every annotated image present in image_dir; returns
    {"map50_95", "map50", "images", "detections"}."""
    import cv2  # noqa: PLC0415
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    gt = _load_coco(ann_file)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ModelError(f"image folder not found: {image_dir}")
    ids = [i for i in sorted(gt.getImgIds()) if (image_dir / gt.imgs[i]["file_name"]).is_file()]
    if limit:
        ids = ids[:limit]
    if not ids:
        raise ModelError(f"no image of {ann_file} is in {image_dir}")
    results: List[Dict] = []
    for image_id in ids:
        path = image_dir / gt.imgs[image_id]["file_name"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ModelError(f"cannot decode image: {path}")
        results.extend(detections_to_coco(detector.detect(img), image_id, len(detector.names)))
    if not results:
        return {"map50_95": 0.0, "map50": 0.0, "images": len(ids), "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50_95": round(float(ev.stats[0]), 5), "map50": round(float(ev.stats[1]), 5),
            "images": len(ids), "detections": len(results)}
