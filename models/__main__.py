"""`python -m models {detect,evaluate,bench,calibrate,convert,download}`: the detector's command line.

Every user error (missing file, bad cfg, wrong weights, unreadable image, missing
backend) is one `error: ...` line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from .cli_args import add_model_args, command_name, spec_from_args
from .errors import ModelConfigError, ModelError

log = logging.getLogger("models")


def wait_if_asked(spec) -> None:
    """Backend triton with --triton-wait: an absent server is waited for (Ctrl-C: exit 130)."""
    if spec.backend == "triton" and spec.triton_wait:
        from .backends.triton import wait_for_server  # noqa: PLC0415  (tritonclient only for triton)

        wait_for_server(spec)


def _read_image(path: Path):
    import cv2  # noqa: PLC0415

    if not path.is_file():
        raise ModelError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ModelError(f"cannot decode image: {path}")
    return img


def cmd_detect(args) -> int:
    from .factory import build_detector  # noqa: PLC0415

    img = _read_image(args.image)
    spec = spec_from_args(args, args.classes)
    wait_if_asked(spec)
    with build_detector(spec, probe_frames=[img]) as det:  # auto judges reduced precision on this image
        log.info("detector: %s", det.describe())
        dets = det.detect(img)
        rows = [{"class_id": int(c), "class_name": det.names[c], "score": round(float(s), 5),
                 "xyxy": [round(float(v), 2) for v in b]} for b, s, c in zip(dets.xyxy, dets.score, dets.class_id)]
    for r in rows:
        print(f"{r['class_name']:>14s} {r['score']:.3f}  " + " ".join(f"{v:7.1f}" for v in r["xyxy"]))
    if args.json:
        print(json.dumps(rows))
    return 0


def cmd_evaluate(args) -> int:
    from .errors import require  # noqa: PLC0415
    from .evaluate import evaluate_coco  # noqa: PLC0415
    from .factory import build_detector  # noqa: PLC0415

    require("pycocotools", "eval", "python -m models evaluate")  # the [eval] extra
    spec = spec_from_args(args, args.classes)
    wait_if_asked(spec)
    with build_detector(spec) as det:
        result = evaluate_coco(det, args.coco_json, args.images, limit=args.limit)
    print(f"backend={det.name} precision={spec.precision} size={det.input_size[0]}x{det.input_size[1]} "
          f"images={result['images']} conf={spec.conf_threshold}")
    print(f"AP50:95 = {result['map50_95']:.4f}   AP50 = {result['map50']:.4f}")
    print(json.dumps(result))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_backends, format_table  # noqa: PLC0415

    from .quantize import read_calibration_frames  # noqa: PLC0415

    if args.model is None and args.cfg is None and getattr(args, "file", None) is None:
        return cmd_guide(args)
    spec = spec_from_args(args)
    image = _read_image(args.image) if args.image else None
    probe = read_calibration_frames(str(args.probe), 12) if args.probe else ([image] if image is not None else None)
    backends = args.backends or ("onnx,openvino,auto" if spec.file is not None else "onnx,tf,opencv")
    results = bench_backends(spec, backends.split(","), args.precisions.split(","), args.seconds, image,
                             batch=args.batch, probe_frames=probe,
                             calib_source=str(args.probe) if args.probe else None)
    print(format_table(results))
    print(json.dumps(results))
    return 0


def cmd_guide(args) -> int:
    """`bench` without a model: the zoo's models side by side on this machine (`bench.model_guide`)."""
    from . import auto  # noqa: PLC0415
    from .bench import GUIDE_MODELS, format_guide, model_guide  # noqa: PLC0415
    from .quantize import read_calibration_frames  # noqa: PLC0415

    spec = spec_from_args(args)
    if "auto" in (spec.backend, spec.precision):  # fp32, the pair a first run starts on: no calibration per model
        spec = auto.chosen_spec(spec, auto.interim(spec))
    probe = read_calibration_frames(str(args.probe), 1) if args.probe else None
    names = [n for n in (args.models or ",".join(GUIDE_MODELS)).split(",") if n]
    rows = model_guide(spec, names, min(args.seconds, 4.0), args.weights_from or (), probe)
    print(format_guide(rows))
    print(json.dumps(rows))
    return 0


def _darknet_only(spec, command: str) -> None:
    """``convert`` and ``serve`` build from a darknet network: a model file is one line, not a traceback."""
    if getattr(spec, "file", None):
        raise ModelConfigError(f"{command} takes a darknet model (--model, --cfg/--weights); an ONNX model file "
                               f"(--model-file) runs as it is on the onnx and openvino backends")


def cmd_convert(args) -> int:
    from .convert import convert  # noqa: PLC0415
    from .darknet import load_network  # noqa: PLC0415

    spec = spec_from_args(args)
    _darknet_only(spec, "convert")
    network = load_network(spec.cfg, spec.weights, spec.size)
    if args.format == "triton":
        from .triton_repo import DEFAULT_NAME, export_triton  # noqa: PLC0415

        print(export_triton(spec, network, args.out, spec.triton_model or DEFAULT_NAME, args.max_batch,
                            args.queue_delay_us, args.instances, "KIND_GPU" if args.gpu else "KIND_CPU"))
        return 0
    print(convert(spec, network, args.format, args.out))
    return 0


def cmd_serve(args) -> int:
    from .darknet import load_network  # noqa: PLC0415
    from .serve import serve  # noqa: PLC0415

    spec = spec_from_args(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ModelConfigError("--tls-cert and --tls-key: give both (the server's certificate and its key) or neither")
    for p in (args.tls_cert, args.tls_key):
        if p is not None and not p.is_file():
            raise ModelConfigError(f"no such file: {p}")
    _darknet_only(spec, "serve")
    network = load_network(spec.cfg, spec.weights, spec.size)
    return serve(spec, network, args.port, args.http_port, args.metrics_port, spec.triton_model, args.max_batch,
                 args.queue_delay_us, args.instances, args.repo, probe=args.probe,
                 tls=(args.tls_cert, args.tls_key) if args.tls_cert else None)


def cmd_calibrate(args) -> int:
    from .factory import load_model  # noqa: PLC0415
    from .quantize import calibrate  # noqa: PLC0415

    spec = spec_from_args(args)
    net = load_model(spec)   # a darknet network, or an ONNX file's layout (--model-file)
    floats = None if args.float_layers is None else [n for n in args.float_layers.split(",") if n]
    out = calibrate(net, args.calib_source, args.out, frames=args.frames, method=args.method,
                    float_layers=floats, letterbox=spec.letterbox, cache_dir=spec.cache_dir)
    print(out)
    return 0


def cmd_download(args) -> int:
    from .zoo import resolve, seed  # noqa: PLC0415

    files = seed(args.name, args.src, args.cache_dir) if args.src else resolve(args.name, args.cache_dir)
    print(f"{files.cfg}\n{files.weights}\n{files.names}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command_name("python -m trackpipe.models", ("models", "trackpipe.models")),
                                description="YOLO detector tools (darknet cfg/weights)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO (which backend auto chose, and why)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def classes_arg(sp):
        from .cli_args import class_list  # noqa: PLC0415
        sp.add_argument("--classes", type=class_list, metavar="CLASSES",
                        help="keep only these classes: names or ids, comma separated, e.g. person,car or 0,2")

    d = sub.add_parser("detect", help="detect objects in one image")
    add_model_args(d)
    d.add_argument("--image", type=Path, required=True, help="the image to detect objects in")
    d.add_argument("--json", action="store_true", help="last stdout line: JSON list of detections")
    classes_arg(d)
    d.set_defaults(fn=cmd_detect)

    e = sub.add_parser("evaluate", help="COCO mAP on an annotated image folder (pycocotools)")
    add_model_args(e)
    e.add_argument("--coco-json", type=Path, required=True, help="COCO instances annotations (JSON)")
    e.add_argument("--images", type=Path, required=True, help="folder of the annotated images")
    e.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    classes_arg(e)
    e.set_defaults(fn=cmd_evaluate, conf=0.005)

    b = sub.add_parser("bench", help="detector throughput per backend, side by side in one run; without "
                                     "--model/--cfg: the zoo's models, FPS here and COCO AP50 (which model to choose)")
    add_model_args(b)
    b.add_argument("--backends", default=None,
                   help="comma-separated: onnx, openvino, tf, opencv, tensorrt, tftrt; 'auto' adds the measured "
                        "choice as its own entry (with the pair it chose); 'all': every backend/precision pair "
                        "(default onnx,tf,opencv; with --model-file onnx,openvino,auto)")
    b.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, int8, fp16 (default fp32)")
    b.add_argument("--seconds", type=float, default=10.0, help="measuring time per entry (default 10)")
    b.add_argument("--batch", type=int, default=1, help="frames per inference call (default 1)")
    b.add_argument("--image", type=Path, help="input image (default: a synthetic frame)")
    b.add_argument("--probe", type=Path, metavar="SOURCE",
                   help="real frames (video, image folder) on which auto checks bf16/int8 against fp32; "
                        "without --calib, int8 joins auto's candidates calibrated once on other frames of it "
                        "(default: --image, else the --calib source; without any, auto considers fp32 only)")
    b.add_argument("--models", metavar="NAMES",
                   help="without --model/--cfg: the zoo models to compare, comma separated (default "
                        "yolo-fastest-1.1-xl,yolo-fastest-1.1,yolov4-tiny,yolov4)")
    b.add_argument("--weights-from", metavar="DIR", action="append", type=Path,
                   help="without --model/--cfg: a folder with zoo models' upstream cfg/weights files (repeatable); "
                        "a model whose weights are nowhere runs with random weights, for its speed")
    b.set_defaults(fn=cmd_bench)

    def triton_repo_args(sp):
        sp.add_argument("--max-batch", type=int, default=8, help="Triton's max_batch_size (default 8)")
        sp.add_argument("--queue-delay-us", type=int, default=2000,
                        help="dynamic batching: how long Triton waits for more requests (default 2000 us)")
        sp.add_argument("--instances", type=int, default=1, help="model instances (default 1)")

    x = sub.add_parser("convert", aliases=["export"], help="write ONNX, SavedModel, TF-TRT, TensorRT artefacts or a "
                                                           "Triton model repository")
    add_model_args(x)
    x.add_argument("--format", choices=("onnx", "savedmodel", "tftrt", "tensorrt", "triton"), default="onnx",
                   help="onnx (default), a TensorFlow SavedModel, a TF-TRT SavedModel, a TensorRT engine or a Triton "
                        "model repository (OUT/<--triton-model>/config.pbtxt + 1/model.onnx, docs/triton.md)")
    x.add_argument("--out", type=Path, required=True, help="output file (onnx, engine) or folder (SavedModel, "
                                                           "Triton repository)")
    triton_repo_args(x)
    x.add_argument("--gpu", action="store_true", help="triton: KIND_GPU instances (default KIND_CPU)")
    x.set_defaults(fn=cmd_convert)

    v = sub.add_parser("serve", help="start a Triton Inference Server hosting the model here (docs/triton.md)")
    add_model_args(v)
    v.add_argument("--port", type=int, default=8001, help="gRPC port (default 8001)")
    v.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    v.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (default 0: off)")
    v.add_argument("--repo", type=Path, metavar="DIR", help="write the served model repository here (default: a "
                                                           "temporary folder)")
    v.add_argument("--probe", metavar="SOURCE", help="real frames (video, image folder) on which backend auto checks "
                                                     "bf16/int8 against fp32 (default: auto considers fp32 only)")
    v.add_argument("--tls-cert", type=Path, metavar="FILE", help="gRPC over TLS (grpcs://): the server's PEM "
                                                                 "certificate (with --tls-key)")
    v.add_argument("--tls-key", type=Path, metavar="FILE", help="gRPC over TLS: the certificate's PEM private key")
    triton_repo_args(v)
    v.set_defaults(fn=cmd_serve)

    c = sub.add_parser("calibrate", help="INT8 calibration on real frames -> Q/DQ ONNX model + cache")
    add_model_args(c)
    c.add_argument("--calib-source", required=True, help="video file, image folder or glob of real frames")
    c.add_argument("--frames", type=int, default=100, help="frames to calibrate on (default 100, at least 16)")
    c.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy",
                   help="how activation ranges are chosen from the calibration frames (default entropy)")
    c.add_argument("--float-layers", help="comma-separated ONNX node names kept in float "
                                          "(default: the first conv and the yolo head convs; '' for none)")
    c.add_argument("--out", type=Path, required=True, help="calibration folder to write (read back by --calib)")
    c.set_defaults(fn=cmd_calibrate)

    from .zoo import DEFAULT_MODEL, ZOO  # noqa: PLC0415

    w = sub.add_parser("download", help="fetch a named model into the cache (sha256-checked)",
                       description="models: " + "; ".join(f"{n} ({e.about})" for n, e in ZOO.items()))
    w.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=tuple(ZOO), metavar="NAME",
                   help=f"model name (default {DEFAULT_MODEL})")
    w.add_argument("--from", dest="src", type=Path, metavar="FOLDER",
                   help="copy the model's upstream files from this folder instead of downloading "
                        "(offline machines, CI); same size and sha256 checks")
    w.add_argument("--cache-dir", type=Path, metavar="DIR", help="default $TRACKPIPE_CACHE, else ~/.cache/trackpipe")
    w.set_defaults(fn=cmd_download)
    return p


def quiet_native_logs() -> None:
    """FFmpeg and OpenCV print their own warnings (e.g. "moov atom not found") straight to
    stderr; our error line says it once. Must run before cv2 opens anything."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def main(argv: Optional[List[str]] = None) -> int:
    quiet_native_logs()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    if __package__ == "models":
        # `python -m models` from the repository root: run the installed trackpipe.models, so that
        # every module (and exception class) has one identity, not a `models.x` and a `trackpipe.models.x`
        import runpy
        runpy.run_module("trackpipe.models.__main__", run_name="__main__", alter_sys=True,
                         init_globals={"__command__": "python -m models"})  # its usage line
    else:
        sys.exit(main())
