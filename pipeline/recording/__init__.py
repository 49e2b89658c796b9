"""Recording: each camera's compressed packets copied (PyAV remux, no decode, no encode) into short
keyframe-aligned fragmented-MP4 segments, an SQLite index of segments and events, event clips cut
from the segments without re-encoding, best snapshots, retention and the review HTTP API.

    layout.py     where segments, snapshots and the index live under the record folder
    segmenter.py  packets -> segments (`Segmenter`); a camera's stream -> packets (`CameraRecorder`)
    index.py      the SQLite index (WAL; one writer process, any number of readers)
    retention.py  age, size and free-space policies
    clips.py      a time range of a camera -> one MP4 (remuxed), for clips and exports
    snapshots.py  the best frame of an event, decoded from its segment, as JPEG
    events.py     tracks per frame -> one review event per tracked object (boxes over time)
    recorder.py   the run's recorder: cameras, index writer, events, snapshots, retention
    review.py     the review API's aiohttp handlers (mounted by the web server)

docs/recording.md describes it for users.
"""
