"""Where frames come from and where results go, as plain classes usable without the pipeline:
sources (video file, image folder, camera, RTSP/HTTP, screen), the MOTChallenge file (`mot`),
snapshots and the output files' states (`outputs`)."""
