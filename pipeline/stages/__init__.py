"""The stage processes: `base.StageProcess` (lifecycle, heartbeat, stats, typed messages) and
capture (with `live` for latest-frame sources), infer, track, render (hosting the display) and sink."""
