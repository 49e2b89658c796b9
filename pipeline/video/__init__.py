"""Output video: H.264 in fragmented MP4 (crash-safe), mp4v as a fallback or by choice."""

from trackpipe.pipeline.video.writer import (
    CODECS,
    DEFAULT_THREADS,
    VideoWriter,
    VideoWriterError,
    choose_preset,
    pyav_available,
)

__all__ = ["CODECS", "DEFAULT_THREADS", "VideoWriter", "VideoWriterError", "choose_preset",
           "pyav_available"]
