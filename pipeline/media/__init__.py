"""Where frames come from and where results go, as plain classes usable without the pipeline:
sources (video file, image folder, camera, RTSP/HTTP, screen), sinks (annotated video, window,
MOT file, JSON-lines events) and snapshots."""
