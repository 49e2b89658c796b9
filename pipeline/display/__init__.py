"""The display hosted by the render stage (``output.display``): window, overlay, mirror or none.

- `geometry`: the rectangles, labels and colours the overlay paints (numpy only);
- `masking`: capture-side removal of the overlay's drawings from screen grabs;
- `qt_env`: whether the overlay can work here, the QApplication, OS capture exclusion;
- `windows`: the PySide6 overlay and mirror windows (imports Qt; used only by the two below);
- `qt_loop`: the Qt event loop that polls for the newest tracks and repaints (driven by
  render's Qt mode, `stages.render_qt`);
- `window`: the OpenCV window of the ``window`` display.

Importing this package or `geometry`, `masking`, `qt_env` needs neither PySide6 nor a display.
"""
