"""Detector: darknet cfg/weights -> TensorFlow / ONNX Runtime / OpenCV backends.

Importing this package is cheap: backends import TensorFlow, ONNX Runtime or
OpenCV only when they are built.
"""
