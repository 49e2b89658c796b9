"""Package data, so that the default run depends on no file outside the package:

- coco.names: darknet's data/coco.names (the 80 COCO class names);
- yolo-fastest-1.1-xl.cfg / .weights: the default model, Yolo-Fastest-1.1-xl with its real COCO
  weights (3.7 MB), from dog-qiuqiu/Yolo-Fastest (ModelZoo/yolo-fastest-1.1_coco, commit 96a2900d),
  public domain, unchanged; `models.zoo` checks their sha256 before use.
"""
