"""The motion-gating figures of one camera in the profile, the metrics and the live view."""

from __future__ import annotations

from typing import Optional


def motion_report(track: dict, tracked: int, capture: Optional[dict] = None) -> dict:
    """From the track stage's per-camera gauges (``detected``, ``moving``, ``motion_frames``,
    ``stationary``, ``filtered``) and its capture's gauges (``motion_ms``, ``motion_gating``):
    ``detect_fraction`` (frames detected / tracked), ``motion_fraction`` (frames with motion /
    frames the motion detector saw; None when it did not run), ``stationary`` (the ids standing
    still at the end), ``filtered`` (detections removed by the filters and the object masks),
    ``motion_ms`` (the motion detector's mean time per frame, in capture) and ``gating``."""
    capture = capture or {}
    mf = int(track.get("motion_frames", 0) or 0)
    out = {"detect_fraction": round(int(track.get("detected", tracked) or 0) / tracked, 4) if tracked else None,
           "motion_fraction": round(int(track.get("moving", 0) or 0) / mf, 4) if mf else None,
           "stationary": list(track.get("stationary", []) or [])}
    if track.get("filtered"):
        out["filtered"] = dict(track["filtered"])
    if "motion_ms" in capture:
        out["motion_ms"] = capture["motion_ms"]
    if "motion_gating" in capture:
        out["gating"] = bool(capture["motion_gating"])
    return out
