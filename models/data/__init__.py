"""Package data: coco.names, darknet's data/coco.names (the 80 COCO class names), so that no run
depends on files outside the package."""
