#!/usr/bin/python3
"""A real RTSP server for trackpipe's tests (GStreamer's gst-rtsp-server).

Runs under the SYSTEM interpreter (``/usr/bin/python3`` with ``python3-gi``), never the
project's virtual environment: PyGObject and the GStreamer typelibs are Debian packages.
Standard library + gi only (no numpy here).

    /usr/bin/python3 tests/rtsp/rtsp_server.py --port 8554 --path /live
    /usr/bin/python3 tests/rtsp/rtsp_server.py --port 8554 --file clip.mp4 --path /file
    /usr/bin/python3 tests/rtsp/rtsp_server.py --check      # what is missing, as JSON

Prints ``READY rtsp://127.0.0.1:PORT/PATH`` on stdout once the socket listens; SIGTERM or
SIGINT stops it cleanly (exit code 0, ``STOPPED`` printed).

Streams are H.264 (x264enc tune=zerolatency, else openh264enc) over RTP, fed by an
``appsrc`` from a producer thread paced by the wall clock, so the source is live: frames not
pulled are never queued up, a frozen server (SIGSTOP) produces nothing and resumes with the
current time. Every frame carries a machine-readable STAMP in its top 48 rows (three rows of
32 black/white blocks, each block ``width // 32`` px wide and 16 px high):

    row 0: frame counter  = int((time.monotonic() - t_start) * fps), strictly increasing, mod 2**32
    row 1: wall clock     = int(time.time() * 1000) mod 2**32 (milliseconds)
    row 2: check          = counter ^ wall_ms ^ 0xA5A5A5A5

bit 31 is the left-most block; a white block (Y=235) is 1, black (Y=16) is 0. The venv side
decodes it with ``tests.rtsp.fixtures.decode_stamp(frame_bgr)``, which gives tests the
capture-to-consumer age of a frame and lets them tell a stale frame from a new one.
Below the stamp: vertical stripes moving 4 px per frame (``--live``), or the mp4's own
pictures, looped forever (``--file``; decoded and re-encoded so that timestamps stay live).
``--live-source videotestsrc`` serves a plain ``videotestsrc is-live=true pattern=ball`` with
a timeoverlay instead (no stamp).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

STAMP_BITS = 32
STAMP_ROWS = 3
STAMP_BLOCK_H = 16
STAMP_MAGIC = 0xA5A5A5A5
Y_BLACK, Y_WHITE = 16, 235

# element -> Debian package that ships it (bookworm)
ELEMENT_PACKAGES = {
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "videoscale": "gstreamer1.0-plugins-base",
    "videorate": "gstreamer1.0-plugins-base",
    "decodebin": "gstreamer1.0-plugins-base",
    "videotestsrc": "gstreamer1.0-plugins-base",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "qtdemux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "avdec_h264": "gstreamer1.0-libav",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "openh264enc": "gstreamer1.0-plugins-bad",
}
ENCODERS = ("x264enc", "openh264enc")


def check() -> dict:
    """What this machine lacks to run the server: {"ok": bool, "missing": [...], "reason": str}."""
    missing = []
    try:
        import gi  # noqa: F401
    except ImportError as e:
        return {"ok": False, "missing": ["python3-gi"],
                "reason": f"missing Debian package python3-gi (/usr/bin/python3: {e})"}
    import gi
    for ns, pkg in (("Gst", "gir1.2-gstreamer-1.0"), ("GstRtspServer", "gir1.2-gst-rtsp-server-1.0")):
        try:
            gi.require_version(ns, "1.0")
            __import__("gi.repository." + ns)
        except (ValueError, ImportError) as e:
            missing.append((pkg, f"typelib {ns}-1.0: {e}"))
    if missing:
        return {"ok": False, "missing": [m[0] for m in missing],
                "reason": "missing Debian package(s): " + "; ".join(f"{p} ({w})" for p, w in missing)}
    from gi.repository import Gst
    Gst.init(None)
    for el in ("appsrc", "appsink", "videoconvert", "videoscale", "decodebin", "rtph264pay",
               "qtdemux", "avdec_h264"):
        if Gst.ElementFactory.find(el) is None:
            missing.append((ELEMENT_PACKAGES[el], f"GStreamer element {el}"))
    if not any(Gst.ElementFactory.find(e) for e in ENCODERS):
        missing.append(("gstreamer1.0-plugins-ugly",
                        "GStreamer element x264enc (or openh264enc from gstreamer1.0-plugins-bad)"))
    # the RTSP server library itself: the typelib loads but the .so may be absent
    try:
        from gi.repository import GstRtspServer
        GstRtspServer.RTSPServer.new()
    except Exception as e:  # noqa: BLE001 - report whatever the binding raises
        missing.append(("gstreamer1.0-rtsp", f"libgstrtspserver: {e}"))
    if missing:
        return {"ok": False, "missing": sorted({m[0] for m in missing}),
                "reason": "missing Debian package(s): " + "; ".join(f"{p} ({w})" for p, w in missing)}
    return {"ok": True, "missing": [], "reason": "", "gstreamer": Gst.version_string(),
            "encoder": next(e for e in ENCODERS if Gst.ElementFactory.find(e))}


# ----------------------------------------------------------------------------- frames (bytes)

def stamp_rows(width: int, counter: int, wall_ms: int) -> bytes:
    """The top STAMP_ROWS*STAMP_BLOCK_H rows of the Y plane, ``width`` bytes per row."""
    bw = width // STAMP_BITS
    black, white = bytes([Y_BLACK]) * bw, bytes([Y_WHITE]) * bw
    pad = bytes([Y_BLACK]) * (width - bw * STAMP_BITS)
    out = []
    counter &= 0xFFFFFFFF
    wall_ms &= 0xFFFFFFFF
    for value in (counter, wall_ms, counter ^ wall_ms ^ STAMP_MAGIC):
        row = b"".join(white if (value >> (STAMP_BITS - 1 - i)) & 1 else black
                       for i in range(STAMP_BITS)) + pad
        out.append(row * STAMP_BLOCK_H)
    return b"".join(out)


class LiveFrames:
    """I420 frames: stamp + vertical stripes moving 4 px per frame."""

    period = 128

    def __init__(self, width: int, height: int, stamp: bool = True):
        self.width, self.height, self.stamp = width, height, stamp
        ramp = bytes(Y_BLACK + (Y_WHITE - Y_BLACK) * (i % self.period) // (self.period - 1)
                     for i in range(width + self.period))
        self.ramp = ramp
        self.uv = bytes([128]) * (2 * (width // 2) * (height // 2))

    def frame(self, counter: int, wall_ms: int) -> bytes:
        w, h = self.width, self.height
        top = STAMP_ROWS * STAMP_BLOCK_H if self.stamp else 0
        off = (counter * 4) % self.period
        row = self.ramp[self.period - off: self.period - off + w]
        parts = [stamp_rows(w, counter, wall_ms)] if self.stamp else []
        parts += [row * (h - top), self.uv]
        return b"".join(parts)


class FileFrames:
    """I420 frames decoded from a video file, looped forever, stamped in the top rows."""

    def __init__(self, Gst, path: str, width: int, height: int, stamp: bool = True):
        self.Gst = Gst
        self.width, self.height, self.stamp = width, height, stamp
        caps = f"video/x-raw,format=I420,width={width},height={height}"
        self.pipe = Gst.parse_launch(
            f'filesrc location="{path}" ! decodebin ! videoconvert ! videoscale ! {caps} ! '
            "appsink name=sink sync=false max-buffers=4 emit-signals=false")
        self.sink = self.pipe.get_by_name("sink")
        self.pipe.set_state(Gst.State.PLAYING)
        self.loops = 0

    def frame(self, counter: int, wall_ms: int) -> bytes:
        Gst = self.Gst
        for _ in range(3):
            sample = self.sink.emit("try-pull-sample", 2 * Gst.SECOND)
            if sample is not None:
                break
            # end of file (or a stall): rewind and try again
            self.loops += 1
            self.pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        else:
            raise RuntimeError("file source produces no frames")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        try:
            data = bytes(info.data)
        finally:
            buf.unmap(info)
        if not self.stamp:
            return data
        top = STAMP_ROWS * STAMP_BLOCK_H * self.width
        return stamp_rows(self.width, counter, wall_ms) + data[top:]

    def close(self) -> None:
        self.pipe.set_state(self.Gst.State.NULL)


def probe_file(Gst, path: str):
    """(width, height, fps) of a video file's first video stream."""
    pipe = Gst.parse_launch(f'filesrc location="{path}" ! decodebin ! videoconvert ! '
                            "video/x-raw,format=I420 ! fakesink name=sink")
    pipe.set_state(Gst.State.PAUSED)
    ret, _, _ = pipe.get_state(10 * Gst.SECOND)
    try:
        if ret == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError(f"cannot decode {path}")
        caps = pipe.get_by_name("sink").get_static_pad("sink").get_current_caps()
        s = caps.get_structure(0)
        ok_f, num, den = s.get_fraction("framerate")
        fps = num / den if ok_f and den and num else 25.0
        return s.get_value("width"), s.get_value("height"), fps
    finally:
        pipe.set_state(Gst.State.NULL)


# ----------------------------------------------------------------------------- server

class Mount:
    """One RTSP mount fed by a paced producer thread through appsrc elements."""

    def __init__(self, Gst, path: str, frames, width: int, height: int, fps: float, encoder: str,
                 bitrate_kbps: int):
        self.Gst = Gst
        self.path, self.frames, self.fps = path, frames, fps
        self.width, self.height = width, height
        self.caps = Gst.Caps.from_string(
            f"video/x-raw,format=I420,width={width},height={height},"
            f"framerate={int(round(fps * 1000))}/1000")
        self.appsrcs = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        gop = max(1, int(round(fps)))
        if encoder == "x264enc":
            enc = (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
                   f"bitrate={bitrate_kbps} threads=1 byte-stream=true")
        else:
            enc = (f"openh264enc complexity=low rate-control=bitrate bitrate={bitrate_kbps * 1000} "
                   f"gop-size={gop}")
        self.launch = (
            "( appsrc name=src is-live=true format=time do-timestamp=true block=false "
            "max-buffers=2 leaky-type=downstream ! queue max-size-buffers=2 leaky=downstream ! "
            f"videoconvert ! {enc} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._produce, name=f"produce{path}", daemon=True)

    def factory(self):
        from gi.repository import GstRtspServer
        f = GstRtspServer.RTSPMediaFactory.new()
        f.set_launch(self.launch)
        f.set_shared(True)
        f.connect("media-configure", self._on_media_configure)
        return f

    def _on_media_configure(self, factory, media):
        src = media.get_element().get_child_by_name("src")
        src.set_property("caps", self.caps)
        with self.lock:
            self.appsrcs.append(src)
        media.connect("unprepared", self._on_unprepared, src)

    def _on_unprepared(self, media, src):
        with self.lock:
            if src in self.appsrcs:
                self.appsrcs.remove(src)

    def _produce(self) -> None:
        Gst = self.Gst
        period = 1.0 / self.fps
        next_t = time.monotonic()
        last = -1
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < next_t:
                time.sleep(next_t - now)
                continue
            # never burst to catch up (after SIGSTOP/SIGCONT or a slow encoder): live means "now"
            next_t = next_t + period if now - next_t < period else now + period
            with self.lock:
                targets = list(self.appsrcs)
            if not targets:
                continue
            # the frame index by the clock, but never repeated: a frame produced late (a starved
            # machine) would otherwise share its index with the next one, on time
            counter = max(last + 1, int((time.monotonic() - self.t0) * self.fps))
            last = counter
            try:
                data = self.frames.frame(counter, int(time.time() * 1000))
            except Exception as e:  # noqa: BLE001 - a test server: report and keep serving
                print(f"frame error: {e}", file=sys.stderr, flush=True)
                time.sleep(0.5)
                continue
            for src in targets:
                src.emit("push-buffer", Gst.Buffer.new_wrapped(data))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2.0)
        close = getattr(self.frames, "close", None)
        if close:
            close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="print what is missing as JSON and exit")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554, help="0 picks a free port (printed in READY)")
    ap.add_argument("--path", default=None, help="mount point (default /live, or /file with --file)")
    ap.add_argument("--file", default=None, help="serve this video file in a loop instead of the live pattern")
    ap.add_argument("--live-source", choices=("stamp", "videotestsrc"), default="stamp")
    ap.add_argument("--width", type=int, default=0, help="frame width (multiple of 32; default 640 or the file's)")
    ap.add_argument("--height", type=int, default=0, help="frame height (even; default 480 or the file's)")
    ap.add_argument("--fps", type=float, default=0, help="frames/s (default 30 or the file's)")
    ap.add_argument("--bitrate", type=int, default=2000, help="kbit/s")
    ap.add_argument("--no-stamp", action="store_true")
    args = ap.parse_args(argv)

    if args.check:
        res = check()
        print(json.dumps(res), flush=True)
        return 0 if res["ok"] else 1
    res = check()
    if not res["ok"]:
        print(res["reason"], file=sys.stderr, flush=True)
        return 2

    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
    Gst.init(None)
    encoder = res["encoder"]
    path = args.path or ("/file" if args.file else "/live")
    if not path.startswith("/"):
        path = "/" + path

    server = GstRtspServer.RTSPServer.new()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    mount = None
    if args.file:
        if not os.path.isfile(args.file):
            print(f"no such file: {args.file}", file=sys.stderr, flush=True)
            return 2
        fw, fh, ffps = probe_file(Gst, args.file)
        w = args.width or fw - fw % 32
        h = args.height or fh - fh % 2
        fps = args.fps or ffps
        frames = FileFrames(Gst, args.file, w, h, stamp=not args.no_stamp)
        mount = Mount(Gst, path, frames, w, h, fps, encoder, args.bitrate)
        mounts.add_factory(path, mount.factory())
    elif args.live_source == "videotestsrc":
        w, h, fps = args.width or 640, args.height or 480, args.fps or 30
        enc = ("x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max=30"
               if encoder == "x264enc" else "openh264enc complexity=low gop-size=30")
        overlay = "timeoverlay ! " if Gst.ElementFactory.find("timeoverlay") else ""
        f = GstRtspServer.RTSPMediaFactory.new()
        f.set_launch(f"( videotestsrc is-live=true pattern=ball ! "
                     f"video/x-raw,width={w},height={h},framerate={int(fps)}/1 ! {overlay}videoconvert ! "
                     f"{enc} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        f.set_shared(True)
        mounts.add_factory(path, f)
    else:
        w, h, fps = args.width or 640, args.height or 480, args.fps or 30
        if w % STAMP_BITS or h % 2 or h <= STAMP_ROWS * STAMP_BLOCK_H:
            print("--width must be a multiple of 32 and --height even and > 48", file=sys.stderr)
            return 2
        mount = Mount(Gst, path, LiveFrames(w, h, stamp=not args.no_stamp), w, h, fps, encoder,
                      args.bitrate)
        mounts.add_factory(path, mount.factory())

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 3
    if mount:
        mount.start()

    def _quit(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, _quit)
    port = server.get_bound_port()
    print(f"READY rtsp://{args.host}:{port}{path} {w}x{h}@{fps:g} {encoder}", flush=True)
    try:
        loop.run()
    finally:
        if mount:
            mount.stop()
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
