"""Appearance encoders: one interface, a built-in colour-histogram encoder, and loaders for
ONNX re-ID models and the original DeepSORT ``mars-small128.pb`` graph.

``Encoder.__call__(frame_bgr (H,W,3) uint8, xyxy (N,4)) -> (N,D) float32``, rows L2-normalised,
so the cosine distance is ``1 - a @ b.T``. Crops are sampled with numpy (bilinear or nearest),
so no encoder here needs OpenCV; ONNX Runtime and TensorFlow are imported inside the classes
that need them, only when such an encoder is built.
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def sample_patches(frame: np.ndarray, xyxy: np.ndarray, out_h: int, out_w: int,
                   bilinear: bool = True) -> np.ndarray:
    """Resample every box of a frame to a fixed-size patch.

    frame: (H,W,C) or (H,W) uint8; xyxy: (N,4) pixels (may extend beyond the frame: samples
    are clamped to the border). Returns (N,out_h,out_w,C) float32 in the frame's value range
    (0..255). Sample points are the centres of an out_h x out_w grid over each box.
    """
    img = np.asarray(frame)
    if img.ndim == 2:
        img = img[:, :, None]
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    hgt, wid = img.shape[:2]
    if n == 0:
        return np.zeros((0, out_h, out_w, img.shape[2]), np.float32)
    fy = (np.arange(out_h) + 0.5) / out_h
    fx = (np.arange(out_w) + 0.5) / out_w
    ys = boxes[:, 1:2] + fy[None, :] * (boxes[:, 3:4] - boxes[:, 1:2]) - 0.5   # (N,out_h)
    xs = boxes[:, 0:1] + fx[None, :] * (boxes[:, 2:3] - boxes[:, 0:1]) - 0.5   # (N,out_w)
    ys = np.clip(ys, 0, hgt - 1)
    xs = np.clip(xs, 0, wid - 1)
    if not bilinear:
        yi = np.rint(ys).astype(np.intp)[:, :, None]
        xi = np.rint(xs).astype(np.intp)[:, None, :]
        return img[yi, xi].astype(np.float32)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, hgt - 1)
    x1 = np.minimum(x0 + 1, wid - 1)
    wy = (ys - y0)[:, :, None, None].astype(np.float32)
    wx = (xs - x0)[:, None, :, None].astype(np.float32)
    y0, y1 = y0[:, :, None], y1[:, :, None]
    x0, x1 = x0[:, None, :], x1[:, None, :]
    top = img[y0, x0].astype(np.float32) * (1 - wx) + img[y0, x1].astype(np.float32) * wx
    bot = img[y1, x0].astype(np.float32) * (1 - wx) + img[y1, x1].astype(np.float32) * wx
    return top * (1 - wy) + bot * wy


def _hsv_planes(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(...,3) BGR in 0..255 -> contiguous H, S, V planes of shape (...) (see bgr_to_hsv)."""
    x = np.ascontiguousarray(np.moveaxis(np.asarray(patches, np.float32), -1, 0)) * np.float32(1 / 255)
    b, g, r = x[0], x[1], x[2]
    v = np.maximum(np.maximum(b, g), r)
    c = v - np.minimum(np.minimum(b, g), r)
    s = c / np.maximum(v, np.float32(1e-12))
    inv = 1 / np.maximum(c, np.float32(1e-12))
    h = np.where(v == r, (g - b) * inv, np.where(v == g, (b - r) * inv + 2, (r - g) * inv + 4))
    h *= np.float32(1 / 6)
    h -= np.floor(h)
    h[c == 0] = 0
    return h, s, v


def bgr_to_hsv(patches: np.ndarray) -> np.ndarray:
    """(...,3) BGR in 0..255 -> (...,3) H in [0,1) (fraction of the hue circle), S, V in [0,1]."""
    return np.stack(_hsv_planes(patches), axis=-1)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Encoder(abc.ABC):
    """Appearance embedding of boxes in a frame."""

    #: embedding dimension D
    dim: int

    @abc.abstractmethod
    def __call__(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """frame: (H,W,3) uint8 BGR; xyxy: (N,4) -> (N,D) float32, L2-normalised rows."""


class HistogramEncoder(Encoder):
    """Built-in encoder: HSV colour histograms of horizontal stripes of the box, no weights.

    The box (shrunk by ``margin`` on each side, to drop background) is resampled to
    ``patch`` pixels and cut into ``stripes`` horizontal bands (for people: head/torso/legs/
    feet). Per band: a joint hue x saturation histogram of the chromatic pixels
    (S >= ``min_saturation`` and V >= ``min_value``; hue is meaningless otherwise) and a value
    (brightness) histogram of all pixels, both normalised by the band's pixel count. Binning
    is soft (each pixel splits its weight linearly between the two nearest bins, hue
    circularly), so a small colour or lighting change moves mass gradually. Rows are
    square-rooted (Hellinger kernel: cosine of square-rooted histograms is the Bhattacharyya
    coefficient) and L2-normalised. D = stripes * (hue_bins * sat_bins + value_bins); the
    default is 4 * (8*3 + 8) = 128. Grayscale video still works through the value histogram.
    """

    def __init__(self, stripes: int = 4, hue_bins: int = 8, sat_bins: int = 3,
                 value_bins: int = 8, patch: tuple[int, int] = (64, 32), margin: float = 0.1,
                 min_saturation: float = 0.15, min_value: float = 0.15) -> None:
        if min(stripes, hue_bins, sat_bins, value_bins) < 1:
            raise ValueError("stripes and bin counts must be >= 1")
        if patch[0] < stripes:
            raise ValueError(f"patch height {patch[0]} must be >= stripes {stripes}")
        if not 0 <= margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {margin}")
        self.stripes, self.hue_bins, self.sat_bins, self.value_bins = stripes, hue_bins, sat_bins, value_bins
        self.patch = (int(patch[0]), int(patch[1]))
        self.margin = float(margin)
        self.min_saturation, self.min_value = float(min_saturation), float(min_value)
        self._per_stripe = hue_bins * sat_bins + value_bins
        self.dim = stripes * self._per_stripe

    def __call__(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        img = np.asarray(frame)
        if img.ndim == 2 or img.shape[2] == 1:
            img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
        wh = boxes[:, 2:] - boxes[:, :2]
        inner = np.hstack([boxes[:, :2] + self.margin * wh, boxes[:, 2:] - self.margin * wh])
        ph, pw = self.patch
        h, s, v = _hsv_planes(sample_patches(img, inner, ph, pw, bilinear=False))  # (N,ph,pw)
        stripe = (np.arange(ph) * self.stripes // ph)[None, :, None]         # (1,ph,1)
        base = np.broadcast_to((np.arange(n)[:, None, None] * self.stripes + stripe)
                               * self._per_stripe, h.shape)
        chroma = (s >= self.min_saturation) & (v >= self.min_value)
        hc, sc, bc = h[chroma], s[chroma], base[chroma]
        s_rel = (sc - self.min_saturation) / (1.0 - self.min_saturation)
        h0, h1, wh = _soft_bins(hc, self.hue_bins, circular=True)
        s0, s1, ws = _soft_bins(s_rel, self.sat_bins, circular=False)
        v0, v1, wv = _soft_bins(v.ravel(), self.value_bins, circular=False)
        bv = base.ravel() + self.hue_bins * self.sat_bins
        nb = self.sat_bins
        idx = np.concatenate([bc + h0 * nb + s0, bc + h0 * nb + s1, bc + h1 * nb + s0,
                              bc + h1 * nb + s1, bv + v0, bv + v1])
        w = np.concatenate([(1 - wh) * (1 - ws), (1 - wh) * ws, wh * (1 - ws), wh * ws,
                            1 - wv, wv])
        counts = np.bincount(idx, w, minlength=n * self.dim)
        feats = np.sqrt(counts.reshape(n, self.dim) / (ph * pw / self.stripes))
        return _l2(feats)


def _soft_bins(x: np.ndarray, nbins: int, circular: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation binning of values in [0,1]: each value splits its unit weight
    between the two nearest bin centres. Returns (lower bin, upper bin, upper weight)."""
    pos = np.asarray(x, dtype=np.float32) * np.float32(nbins) - np.float32(0.5)
    b0f = np.floor(pos)
    w1 = pos - b0f
    b0 = b0f.astype(np.intp)
    b1 = b0 + 1
    if circular:
        return b0 % nbins, b1 % nbins, w1
    w1[b0 < 0] = 1.0
    w1[b1 > nbins - 1] = 0.0
    return np.clip(b0, 0, nbins - 1), np.clip(b1, 0, nbins - 1), w1


def _require_file(path, what: str, hint: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}. {hint}")
    return p


class OnnxReidEncoder(Encoder):
    """Any ONNX re-identification model given by path, run with ONNX Runtime.

    The model takes one image batch, NCHW (``(N,3,H,W)``) or NHWC (``(N,H,W,3)``), float32
    (normalised with ``mean``/``std`` after scaling to [0,1], RGB unless ``bgr``) or uint8
    (raw pixels); H and W come from the model when static, else ``input_size``. Its first
    output must be (N,D). Typical models: OSNet / FastReID exports (256x128, ImageNet mean/std).
    """

    def __init__(self, path, input_size: Optional[tuple[int, int]] = None,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), bgr: bool = False,
                 batch_size: int = 32, providers: Optional[Sequence[str]] = None) -> None:
        p = _require_file(path, "ONNX re-ID model", "Pass the path of an exported .onnx model.")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("OnnxReidEncoder needs onnxruntime: pip install onnxruntime") from exc
        try:
            self.session = ort.InferenceSession(str(p), providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            raise ValueError(f"{p}: not a loadable ONNX model ({exc.__class__.__name__}: {exc})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ValueError(f"{p}: expected a 4-D image input, got shape {shape}")
        self.nhwc = shape[3] == 3 and shape[1] != 3
        hw = shape[1:3] if self.nhwc else shape[2:4]
        if all(isinstance(d, int) for d in hw):
            self.input_size = (int(hw[0]), int(hw[1]))
        elif input_size is not None:
            self.input_size = (int(input_size[0]), int(input_size[1]))
        else:
            raise ValueError(f"{p}: input height/width are dynamic ({hw}); pass input_size=(H, W)")
        self.uint8 = "uint8" in inp.type
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.bgr = bgr
        self.batch_size = int(batch_size)
        out_shape = self.session.get_outputs()[0].shape
        self.dim = out_shape[-1] if isinstance(out_shape[-1], int) else -1

    def preprocess(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """(H,W,3) BGR, (N,4) -> the model input batch (N,3,h,w) or (N,h,w,3)."""
        h, w = self.input_size
        x = sample_patches(frame, xyxy, h, w, bilinear=True)                  # (N,h,w,3) BGR
        if not self.bgr:
            x = x[..., ::-1]
        if self.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        else:
            x = ((x / 255.0 - self.mean) / self.std).astype(np.float32)
        if not self.nhwc:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x

    def __call__(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, max(self.dim, 0)), np.float32)
        outs = []
        for i in range(0, len(boxes), self.batch_size):
            batch = self.preprocess(frame, boxes[i:i + self.batch_size])
            out = self.session.run(None, {self.input_name: batch})[0]
            outs.append(np.asarray(out, np.float32).reshape(len(batch), -1))
        feats = np.concatenate(outs)
        self.dim = feats.shape[1]
        return _l2(feats)


def mars_patch_boxes(xyxy: np.ndarray, patch_hw: tuple[int, int] = (128, 64)) -> np.ndarray:
    """deep_sort's ``extract_image_patch`` geometry: widen/narrow each box about its centre
    to the patch aspect ratio (width = height * W/H), keeping the height.

    xyxy: (N,4) -> (N,4) xyxy. (Clipping is done by the sampler, which clamps to the border.)
    """
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    h = b[:, 3] - b[:, 1]
    cx = (b[:, 0] + b[:, 2]) / 2
    new_w = h * patch_hw[1] / patch_hw[0]
    b[:, 0] = cx - new_w / 2
    b[:, 2] = cx + new_w / 2
    return b


class MarsSmall128Encoder(Encoder):
    """The original DeepSORT appearance network (``mars-small128.pb``, a frozen TF1 graph).

    Input tensor ``images`` (N,128,64,3) uint8 BGR patches (deep_sort feeds OpenCV BGR
    crops), output ``features`` (N,128). Boxes are first brought to the 1:2 patch aspect
    ratio about their centre (:func:`mars_patch_boxes`). TensorFlow is imported here only.
    The file is not shipped: get it from the deep_sort project's resources
    (``resources/networks/mars-small128.pb``).
    """

    def __init__(self, path, input_name: str = "images", output_name: str = "features",
                 batch_size: int = 32) -> None:
        p = _require_file(path, "DeepSORT appearance model (mars-small128.pb)",
                          "Download it from the nwojke/deep_sort resources "
                          "(resources/networks/mars-small128.pb) and pass its path.")
        from trackpipe.models.errors import require

        tf = require("tensorflow", "tf", "the DeepSORT appearance model (mars-small128.pb)")
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(p.read_bytes())
        except Exception as exc:  # protobuf's DecodeError is not exported stably
            raise ValueError(f"{p}: not a frozen TensorFlow GraphDef ({exc.__class__.__name__})") from None
        self._graph = tf.Graph()
        with self._graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="net")
        names = {op.name for op in self._graph.get_operations()}
        missing = [n for n in (input_name, output_name) if f"net/{n}" not in names]
        if missing:
            raise ValueError(f"{p}: graph has no tensor(s) {', '.join(missing)}; "
                             f"operations include {', '.join(sorted(names)[:8])}")
        self._input = self._graph.get_tensor_by_name(f"net/{input_name}:0")
        self._output = self._graph.get_tensor_by_name(f"net/{output_name}:0")
        shape = self._input.shape.as_list()
        if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
            raise ValueError(f"{p}: expected input (N,H,W,3) with static H, W, got {shape}")
        self.patch_hw = (int(shape[1]), int(shape[2]))
        self.dim = int(self._output.shape.as_list()[-1])
        self.batch_size = int(batch_size)
        self._session = tf.compat.v1.Session(graph=self._graph)

    def preprocess(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """(H,W,3) BGR, (N,4) -> (N,128,64,3) uint8 patches."""
        boxes = mars_patch_boxes(xyxy, self.patch_hw)
        x = sample_patches(frame, boxes, self.patch_hw[0], self.patch_hw[1], bilinear=True)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def __call__(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        for i in range(0, len(boxes), self.batch_size):
            batch = self.preprocess(frame, boxes[i:i + self.batch_size])
            outs.append(self._session.run(self._output, {self._input: batch}))
        return _l2(np.concatenate(outs))


def build_encoder(name: str = "hist", path=None, **kw) -> Encoder:
    """``hist`` (built-in), ``onnx`` (path required) or ``mars`` (path to mars-small128.pb)."""
    if name == "hist":
        return HistogramEncoder(**kw)
    if name == "onnx":
        if path is None:
            raise ValueError("the onnx encoder needs path=<model.onnx>")
        return OnnxReidEncoder(path, **kw)
    if name == "mars":
        if path is None:
            raise ValueError("the mars encoder needs path=<mars-small128.pb>")
        return MarsSmall128Encoder(path, **kw)
    raise ValueError(f"unknown encoder {name!r}; choose hist, onnx or mars")
