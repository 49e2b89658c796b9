"""The one drawing module for the annotated video, the live window and the Qt screen overlay.

``annotate(frame, tracks, names)`` draws in place with OpenCV; ``overlay_items(...)`` returns the
same plan (boxes, label rects, texts, colours) for QPainter. Labels are laid out by
``layout_labels``: inside the frame, never overlapping, next to their boxes.
"""

from trackpipe.pipeline.drawing.annotate import (
    DrawItem,
    annotate,
    draw_items,
    draw_lines,
    draw_polygons,
    draw_zones,
    overlay_items,
)
from trackpipe.pipeline.drawing.boxes import BoxAnnotator
from trackpipe.pipeline.drawing.layout import DROPPED, layout_labels
from trackpipe.pipeline.drawing.style import PALETTE_BGR, DrawStyle, label_text, palette_color, text_color

__all__ = ["DROPPED", "PALETTE_BGR", "BoxAnnotator", "DrawItem", "DrawStyle", "annotate", "draw_items", "draw_lines",
           "draw_polygons", "draw_zones", "label_text", "layout_labels", "overlay_items", "palette_color",
           "text_color"]
