"""CNN auto-mask of the breast lesion: inference, prompts, post-processing, model loading.

Pipeline for one 2D image (any size, any spacing):

1. region of interest: the whole ultrasound field of view (detected, so black margins and
   annotation bands do not shrink the lesion in the network's view), or the user's box
   prompt expanded by 25 %;
2. robust intensity normalisation (0.5-99.5th percentile to [0, 1]) and letterboxing to the
   network size; horizontal-flip test-time augmentation (mean of two passes);
3. the probability map is mapped back exactly onto the original pixel grid;
4. post-processing: threshold 0.5, keep one component (the largest probability mass, or the
   one under / nearest the click prompt), fill holes, optional morphological smoothing.

The result keeps the input's geometry (spacing, origin, direction).  A click prompt runs a second
pass on a crop around the chosen component ("refine").

Weights are a plain ``state_dict`` loaded with ``torch.load(weights_only=True)`` (no code runs
on load; see :func:`.networks.load_weights`), with a JSON model card beside them whose sha256
must match.  A file that is not pure data is refused as such, not reported as a misfit.

Example
-------
>>> seg = Segmenter.from_default()                          # doctest: +SKIP
>>> result = seg.predict(loaded.image, click=(210, 140))    # doctest: +SKIP
>>> result.mask, result.probability                         # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import InputError, ModelError, one_line
from ..imaging.rings import detect_fov
from .networks import (ARCHITECTURE_NAME, ARCHITECTURE_VERSION, build_network, load_weights,
                       state_dict_from)
from .preprocess import Letterbox, normalise_intensity

# torch is imported inside the functions that run the network: it is optional (the [torch]
# extra) and costs seconds, and check_ultrasound, DEFAULT_MODEL and the model card serve
# callers without it

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "busbra_unet.pt"
BOX_MARGIN = 0.25       # box prompts are loose in practice; 25 % context helps the network
REFINE_MARGIN = 0.6     # crop around the clicked component, +60 % of its size on each side


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights) -> Path:
    return Path(weights).with_suffix(".json")


@dataclass
class SegmentationResult:
    """``mask`` (uint8 0/1) and ``probability`` (float32) on the input grid, plus details."""

    mask: sitk.Image
    probability: sitk.Image
    info: dict = field(default_factory=dict)


class Segmenter:
    """A loaded segmentation network (see module docstring).

    Parameters
    ----------
    net : torch.nn.Module
        Network in eval mode.
    size : int
        Square network input size (pixels).
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
    card : dict
        The model card.
    """

    def __init__(self, net, size: int, device: str = "cpu", card: dict | None = None,
                 tta: bool = True, threshold: float = 0.5):
        self.net = net
        self.size = int(size)
        self.device = device
        self.card = card or {}
        self.tta = tta
        self.threshold = float(threshold)

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_default(cls, device: str = "cpu", **kw) -> "Segmenter":
        return cls.load(DEFAULT_MODEL, device=device, **kw)

    @classmethod
    def load(cls, weights, device: str = "cpu", **kw) -> "Segmenter":
        """Load weights + model card; verify sha256 and architecture.

        Raises
        ------
        ModelError
            Missing files, sha256 mismatch, unknown architecture, a weights file that is not
            pure data (refused unread) or is corrupt, weights not matching the architecture,
            unusable device.
        """
        weights = Path(weights)
        if not weights.exists():
            raise ModelError(f"{weights}: model weights not found")
        cp = card_path(weights)
        if not cp.exists():
            raise ModelError(f"{weights}: model card {cp.name} not found beside the weights")
        try:
            card = json.loads(cp.read_text())
        except ValueError as exc:
            raise ModelError(f"{cp}: model card is not valid JSON ({one_line(exc)})") from None
        if not isinstance(card, dict):
            raise ModelError(f"{cp}: model card is not a JSON object")
        digest = sha256_of(weights)
        if card.get("sha256") != digest:
            raise ModelError(f"{weights}: sha256 {digest[:12]}… does not match the model card "
                             f"({str(card.get('sha256'))[:12]}…): corrupt or replaced weights")
        arch = card.get("architecture")
        arch = arch if isinstance(arch, dict) else {}
        if arch.get("name") != ARCHITECTURE_NAME or _as_int(arch.get("version")) != \
                ARCHITECTURE_VERSION:
            raise ModelError(f"{cp}: architecture {arch.get('name')!r} v{arch.get('version')} "
                             f"is not supported by this library ({ARCHITECTURE_NAME!r} "
                             f"v{ARCHITECTURE_VERSION})")
        try:
            size, threshold = int(card.get("input_size", 160)), float(card.get("threshold", 0.5))
            if size <= 0 or not 0 < threshold < 1:
                raise ValueError(f"input_size {size}, threshold {threshold}")
            net = build_network(arch)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{cp}: model card values are unusable ({one_line(exc)})") from None
        dev = _check_device(device)
        # unpickling problems (code, corruption) are told apart from shapes that do not fit
        state = state_dict_from(load_weights(weights), weights)
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:  # missing/unexpected keys, shapes
            first = str(exc).strip().splitlines()[0][:200]
            raise ModelError(f"{weights}: weights do not fit the architecture in the model "
                             f"card ({first})") from None
        net.eval().to(dev)
        return cls(net, size, dev, card, threshold=threshold, **kw)

    # -- inference --------------------------------------------------------------------------
    def probability(self, arr: np.ndarray) -> np.ndarray:
        """Lesion probability for a 2D grey array (any size), on the same pixel grid."""
        import torch
        lb = Letterbox(arr.shape[0], arr.shape[1], self.size)
        x = torch.from_numpy(lb.forward(normalise_intensity(arr)))[None, None].to(self.device)
        with torch.inference_mode():
            logits = self.net(x)
            if self.tta:
                logits = 0.5 * (logits + torch.flip(self.net(torch.flip(x, dims=[3])), dims=[3]))
            p = torch.sigmoid(logits)[0, 0].float().cpu().numpy()
        return np.clip(lb.inverse(p), 0.0, 1.0)

    def predict(self, image: sitk.Image, box=None, click=None, smooth_px: int = 1,
                use_fov: bool = True) -> SegmentationResult:
        """Segment the lesion in a 2D image.

        Parameters
        ----------
        image : SimpleITK.Image
            2D grey image (spacing/origin/direction are copied to the outputs).
        box : (x0, y0, x1, y1), optional
            Pixel box (column, row; inclusive) around the lesion.
        click : (x, y), optional
            Pixel (column, row) inside the lesion.
        smooth_px : int
            Radius of the morphological opening/closing that smooths the contour (0 = off).
        use_fov : bool
            Restrict the unprompted search to the detected ultrasound field of view.

        Returns
        -------
        SegmentationResult

        Raises
        ------
        InputError
            Prompts outside the image, or not 2D.
        """
        if image.GetDimension() != 2:
            raise InputError("segmentation needs a 2D image")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("segmentation needs a grey image (convert colour first)")
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        h, w = arr.shape
        info = {"prompt": "none"}
        if box is not None:
            x0, y0, x1, y1 = _check_box(box, w, h)
            roi = _expand((x0, y0, x1, y1), BOX_MARGIN, w, h)
            info.update(prompt="box", box=[x0, y0, x1, y1])
        fov = None
        if use_fov and box is None:
            fov = sitk.GetArrayFromImage(detect_fov(image)) > 0
            if not fov.any():
                fov = None
        if box is None:
            if fov is not None:
                ys, xs = np.nonzero(fov)
                roi = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            else:
                roi = (0, 0, w - 1, h - 1)
        prob = np.zeros((h, w), np.float32)
        prob[roi[1]:roi[3] + 1, roi[0]:roi[2] + 1] = self.probability(
            arr[roi[1]:roi[3] + 1, roi[0]:roi[2] + 1])
        if box is not None:   # nothing outside the user's box belongs to the lesion
            inside = np.zeros_like(prob, bool)
            inside[y0:y1 + 1, x0:x1 + 1] = True
            prob[~inside] = 0
        seed = None
        if click is not None:
            cx, cy = _check_click(click, w, h)
            seed = (cy, cx)
            info.update(prompt="click", click=[cx, cy])
            comp = _pick_component(prob >= self.threshold, prob, seed)
            if comp.any():
                ys, xs = np.nonzero(comp)
                r = _expand((xs.min(), ys.min(), xs.max(), ys.max()), REFINE_MARGIN, w, h)
            else:   # nothing found at the click: look at a 20 mm-ish window around it
                half = max(16, min(h, w) // 6)
                r = (max(0, cx - half), max(0, cy - half), min(w - 1, cx + half),
                     min(h - 1, cy + half))
            refined = self.probability(arr[r[1]:r[3] + 1, r[0]:r[2] + 1])
            prob2 = np.zeros_like(prob)
            prob2[r[1]:r[3] + 1, r[0]:r[2] + 1] = refined
            prob = prob2
            info["refine_box"] = [int(v) for v in r]
        if fov is not None:
            # the black surround of a sector scan, burned-in text and calipers are no tissue:
            # the lesion lies inside the field of view
            prob[~fov] = 0
        mask = postprocess(prob, self.threshold, seed=seed, smooth_px=smooth_px)
        info["lesion_px"] = int(mask.sum())
        info["model"] = self.card.get("name", "custom")
        info["confidence"] = mask_confidence(prob, mask)
        info["flags"] = plausibility_flags(arr, fov, info["confidence"])
        m = sitk.GetImageFromArray(mask.astype(np.uint8))
        m.CopyInformation(image)
        p = sitk.GetImageFromArray(prob.astype(np.float32))
        p.CopyInformation(image)
        return SegmentationResult(m, p, info)


# Below this mean lesion probability a CNN mask is flagged for review. Measured on the 329
# BUS-BRA validation images: 95% of masks with Dice > 0.8 have confidence >= 0.93; at 0.8 five
# masks are flagged, all with Dice < 0.5, and no mask with Dice > 0.8 is.
LOW_CONFIDENCE = 0.8
# B-mode speckle is spatially correlated over a few pixels; white noise has a neighbouring-
# pixel correlation of ~0. No BUS-BRA validation image falls below this value.
MIN_SPECKLE_CORRELATION = 0.3


_SEGMENTERS = {}


def get_segmenter(model=None, device="cpu", threads=None) -> "Segmenter":
    """The CNN of ``model`` (default: the shipped weights) on ``device``, loaded once per
    process and kept (batch workers and the Slicer panel segment many images with it).

    ``threads`` caps torch's CPU threads (a worker of a parallel batch uses one).
    """
    key = (str(model or DEFAULT_MODEL), device)
    if key not in _SEGMENTERS:
        if threads:
            import torch
            torch.set_num_threads(int(threads))
        _SEGMENTERS[key] = Segmenter.load(model or DEFAULT_MODEL, device=device)
    return _SEGMENTERS[key]


def auto_mask(image, *, segmenter=None, box=None, click=None, path=None,
              no_lesion: str | None = None) -> SegmentationResult:
    """The CNN's lesion mask of one image, refused when the CNN finds no lesion.

    The one place that checks an empty auto-mask (the ``segment`` and ``report`` commands, the
    cohort segmentation, the Slicer CLI and panel all come here).

    Parameters
    ----------
    image : SimpleITK.Image or LoadedImage
        2D grey image (its spacing is kept on the mask).
    segmenter : Segmenter, optional
        Default: :func:`get_segmenter` (the shipped CNN on the CPU).
    box, click : sequence of float, optional
        Prompts in pixels (column, row): ``(x0, y0, x1, y1)`` or ``(x, y)``.
    path : str, optional
        The image's file, named in the error (default: the loaded image's path).
    no_lesion : str, optional
        The whole error message when no lesion is found (each caller says what the user can do
        next: give a prompt, draw a mask, pass ``--mask``).

    Returns
    -------
    SegmentationResult
        ``mask`` (0/1 on the image grid), ``probability`` and ``info`` (``lesion_px``,
        ``confidence``, ``prompt``, ``flags``).

    Raises
    ------
    InputError
        No lesion found (one line: ``no_lesion``).
    """
    where = path or getattr(image, "path", None) or "image"
    image = getattr(image, "image", image)          # a LoadedImage gives its SimpleITK image
    seg = segmenter if segmenter is not None else get_segmenter()
    res = seg.predict(image, box=box, click=click)
    if not res.info["lesion_px"]:
        raise InputError(no_lesion or f"{where}: the CNN found no lesion; give a prompt or "
                                      "draw it")
    return res


def mask_confidence(prob: np.ndarray, mask: np.ndarray) -> float:
    """Mean lesion probability inside the mask (0 when the mask is empty): how sure the network
    is of the pixels it drew; near 1 for a clear lesion, near the 0.5 threshold for a guess."""
    m = np.asarray(mask, bool)
    return float(prob[m].mean()) if m.any() else 0.0


def plausibility_flags(arr: np.ndarray, fov, confidence: float) -> list:
    """Reasons to distrust an auto-mask: low confidence, statistics unlike B-mode speckle."""
    flags = []
    if 0 < confidence < LOW_CONFIDENCE:
        flags.append(f"low CNN confidence ({confidence:.2f} < {LOW_CONFIDENCE}): review the mask")
    region = fov if fov is not None else np.ones(arr.shape, bool)
    pair = region[:, :-1] & region[:, 1:]
    if pair.sum() > 100:
        a, b = arr[:, :-1][pair].astype(np.float64), arr[:, 1:][pair].astype(np.float64)
        if a.std() > 0 and b.std() > 0:
            r = float(np.corrcoef(a, b)[0, 1])
            if r < MIN_SPECKLE_CORRELATION:
                flags.append(f"image statistics unlike B-mode ultrasound (neighbouring-pixel "
                             f"correlation {r:.2f}; noise?): the CNN mask is unreliable")
    return flags


def _as_int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _check_device(device: str) -> str:
    """``device`` if torch can use it: ``cpu``, ``cuda`` or ``cuda:N`` of an existing GPU."""
    import torch
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device != "cpu" and not m:
        raise ModelError(f"--device {device}: choose cpu, cuda or cuda:N")
    if m and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available on this machine (use cpu)")
    if m and m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ModelError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                         "CUDA device(s), numbered from 0")
    return device


def _check_box(box, w, h):
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"--box {box!r}: expected four pixel coordinates x0 y0 x1 y1") from None
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 < 0 or y1 < 0 or x0 >= w or y0 >= h or x1 - x0 < 3 or y1 - y0 < 3:
        raise InputError(f"--box {x0} {y0} {x1} {y1}: must overlap the {w}x{h} image and be "
                         "at least 4 pixels wide and high")
    return max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)


def _check_click(click, w, h):
    try:
        cx, cy = (int(round(float(v))) for v in click)
    except (TypeError, ValueError):
        raise InputError(f"--click {click!r}: expected two pixel coordinates x y") from None
    if not (0 <= cx < w and 0 <= cy < h):
        raise InputError(f"--click {cx} {cy}: outside the {w}x{h} image")
    return cx, cy


def _expand(b, frac, w, h):
    x0, y0, x1, y1 = b
    dx, dy = int(math.ceil((x1 - x0 + 1) * frac)), int(math.ceil((y1 - y0 + 1) * frac))
    return (max(0, x0 - dx), max(0, y0 - dy), min(w - 1, x1 + dx), min(h - 1, y1 + dy))


def _pick_component(binary, prob, seed=None):
    lab, n = ndi.label(binary)
    if n == 0:
        return np.zeros_like(binary)
    if seed is not None:
        if lab[seed]:
            return lab == lab[seed]
        # nearest component to the click
        dist, (iy, ix) = ndi.distance_transform_edt(lab == 0, return_indices=True)
        return lab == lab[iy[seed], ix[seed]]
    mass = ndi.sum(prob, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(mass)))


def postprocess(prob: np.ndarray, threshold: float = 0.5, seed=None,
                smooth_px: int = 1) -> np.ndarray:
    """Threshold, keep one component (largest probability mass or the seed's), fill holes,
    smooth with an opening+closing of radius ``smooth_px``."""
    comp = _pick_component(prob >= threshold, prob, seed)
    comp = ndi.binary_fill_holes(comp)
    if smooth_px > 0 and comp.any():
        st = _disk(smooth_px)
        sm = ndi.binary_closing(ndi.binary_opening(comp, st), st)
        if sm.any():
            comp = _pick_component(sm, prob, seed if (seed is not None and sm[seed]) else None)
            comp = ndi.binary_fill_holes(comp)
    return comp


def _disk(r):
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r
