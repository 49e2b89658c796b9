"""Latest-frame capture in three parts, each usable and testable alone: `SlotAllocator`
(slots.py), `SourceWatchdog` (watchdog.py) and `Publisher` (publisher.py), tied together by
`LiveCapture` (capture.py) inside the capture process."""
