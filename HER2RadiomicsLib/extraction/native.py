"""The params-YAML driver of our own engine: pyradiomics' params in, its feature keys out.

``NativeExtractor(params).execute(image, mask)`` returns ``{"original_<class>_<feature>":
value}`` in pyradiomics' order (shape first, then the classes as the YAML lists them, each
class's features as listed, or all of its default features in name order). Settings and image
types the engine does not implement yet are refused up front, by name.
"""
from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from . import ENGINE_VERSION
from . import engine as E
from .multi import texture_many

CLASSES = E.CLASSES
OPTIONAL = {"firstorder": E.FIRSTORDER_OPTIONAL}
# Settings that change nothing for a 2D original image, or that the driver implements.
SETTINGS = {"label", "binWidth", "binCount", "voxelArrayShift", "distances", "symmetricalGLCM",
            "weightingNorm", "gldm_a", "normalize", "normalizeScale", "removeOutliers",
            "minimumROIDimensions", "minimumROISize", "force2D", "force2Ddimension",
            "additionalInfo", "geometryTolerance", "correctMask", "preCrop", "padDistance",
            "enableCExtensions", "sigma", "lbp2DRadius", "lbp2DSamples", "lbp2DMethod",
            "gradientUseSpacing", "wavelet", "level", "start_level", "resampledPixelSpacing",
            "interpolator"}
IMAGE_TYPES = {"Original", "Square", "SquareRoot", "Logarithm", "Exponential", "LoG",
               "Gradient", "LBP2D", "Wavelet"}
PREFIX = {"Square": "square", "SquareRoot": "squareroot", "Logarithm": "logarithm",
          "Exponential": "exponential"}


def filtered_images(image: sitk.Image, arr: np.ndarray, kind: str, st: dict, box=None):
    """``(key prefix, array)`` for each image one image type yields (LoG: one per sigma).
    ``box`` (row and column slices): the part of a local filter's image that is used (see
    :func:`lbp_image`); the whole image when not given."""
    if kind == "Original":
        yield "original", arr
    elif kind in PREFIX:
        yield PREFIX[kind], pointwise_filter(arr, kind)
    else:
        src = sitk.GetImageFromArray(arr)
        src.CopyInformation(image)
        if kind == "Gradient":
            f = sitk.GradientMagnitudeImageFilter()
            f.SetUseImageSpacing(bool(st.get("gradientUseSpacing", True)))
            yield "gradient", sitk.GetArrayFromImage(f.Execute(src))
        elif kind == "LBP2D":
            yield "lbp-2D", lbp_image(arr, st, box)
        elif kind == "Wavelet":
            yield from wavelet_images(arr, st)
        elif kind == "LoG":
            size = np.array(image.GetSize())
            spacing = np.array(image.GetSpacing())
            if np.min(size) < 4:          # pyradiomics yields no LoG image for tiny images
                return
            for sigma in st.get("sigma", []):
                # sigmas that do not fit the image are skipped, as pyradiomics skips them
                if sigma > 0 and np.all(size >= np.ceil(sigma / spacing) + 1):
                    f = sitk.LaplacianRecursiveGaussianImageFilter()
                    f.SetNormalizeAcrossScale(True)
                    f.SetSigma(sigma)
                    name = "log-sigma-%s-mm-3D" % str(sigma).replace(".", "-")
                    yield name, sitk.GetArrayFromImage(f.Execute(src))


def lbp_image(arr: np.ndarray, st: dict, box=None) -> np.ndarray:
    """scikit-image's local binary pattern of ``arr`` (as pyradiomics' LBP2D), computed on
    the image up to the end of ``box`` plus the ceil(radius) pixels its samples read; outside
    ``box`` NaN.

    Exact: a pixel's pattern reads its samples on a circle of the radius (bilinear, between
    the pixels at most ceil(radius) away; outside the image a constant 0), so inside the box
    it sees the same pixels as on the whole image. The crop keeps the image's first row and
    column: scikit-image interpolates at absolute coordinates (row + offset), whose rounding
    depends on the row's magnitude, so a crop that moved the origin changed near-tie patterns
    (20 of 160,000 pixels on one BUS-BRA image). Only the rows and columns after the box are
    cut: BUS-BRA, tumour + 3 rings, median of six images, 12.0 -> 7.8 ms per image.
    """
    # when run: scikit-image's feature module costs ~0.2 s, LBP2D images only
    from skimage.feature import local_binary_pattern
    radius = st.get("lbp2DRadius", 1)
    if box is None:
        box = (slice(0, arr.shape[0]), slice(0, arr.shape[1]))
    m = int(math.ceil(radius))
    crop = tuple(slice(0, min(b.stop + m, n)) for b, n in zip(box, arr.shape))
    with warnings.catch_warnings():
        # pyradiomics feeds LBP the float image too (same values; tested against it):
        # scikit-image's "floating-point input" warning is expected, not news
        warnings.filterwarnings("ignore", "Applying `local_binary_pattern` to "
                                "floating-point", UserWarning)
        lbp = local_binary_pattern(arr[crop], P=st.get("lbp2DSamples", 8), R=radius,
                                   method=st.get("lbp2DMethod", "uniform"))
    out = np.full(arr.shape, np.nan)
    # the margin saw a cut-off neighbourhood (unless at the image border): NaN, not used
    out[box] = lbp[tuple(slice(b.start - c.start, b.stop - c.start) for b, c in zip(box, crop))]
    return out


def wavelet_images(arr: np.ndarray, st: dict):
    """Stationary wavelet decomposition as pyradiomics defines it: odd axes padded by one
    wrapped row/column, ``start_level`` approximations skipped, then ``level`` single-level
    decompositions, each named after its (x, y) low/high pass (``wavelet-LH``, ``wavelet2-HL``
    ...), the last approximation (``wavelet-LL``) at the end; padding removed again."""
    import pywt  # when run: wavelet images only (one-case extract start-up)
    wavelet = pywt.Wavelet(st.get("wavelet", "coif1"))
    level, start = int(st.get("level", 1)), int(st.get("start_level", 0))
    axes = (1, 0)                              # x first, as pyradiomics orders the names
    shape = arr.shape
    crop = tuple(slice(None, -1 if n % 2 else None) for n in shape)
    data = np.pad(arr, tuple((0, n % 2) for n in shape), "wrap")
    for _ in range(start):
        data = pywt.swtn(data, wavelet, level=1, start_level=0, axes=axes)[0]["aa"].copy()
    details = []
    for _ in range(start, start + level):
        dec = pywt.swtn(data, wavelet, level=1, start_level=0, axes=axes)[0]
        data = dec["aa"].copy()
        details.append({k.replace("a", "L").replace("d", "H"): v[crop]
                        for k, v in dec.items() if k != "aa"})
    for idx, wl in enumerate(details, start=1):
        for name, im in wl.items():
            yield ("wavelet-%s" % name if idx == 1 else "wavelet%s-%s" % (idx, name)), im
    yield ("wavelet-LL" if len(details) == 1 else "wavelet%s-LL" % len(details)), data[crop]


def pointwise_filter(arr: np.ndarray, kind: str) -> np.ndarray:
    """pyradiomics' grey-value transforms of the whole image (float64), each scaled back to
    the original image's largest absolute value."""
    im = arr.astype(np.float64)
    big = np.max(np.abs(im))
    if kind == "Square":
        return ((1 / np.sqrt(big)) * im) ** 2
    if kind == "SquareRoot":
        out = im.copy()
        out[im > 0] = np.sqrt(im[im > 0] * big)
        out[im < 0] = -np.sqrt(-im[im < 0] * big)
        return out
    if kind == "Logarithm":
        out = im.copy()
        out[im > 0] = np.log(im[im > 0] + 1)
        out[im < 0] = -np.log(-(im[im < 0] - 1))
        return out * (big / np.max(np.abs(out)))
    if kind == "Exponential":
        return np.exp((np.log(big) / big) * im)
    return arr


def _sha1(arr: np.ndarray) -> str:
    """``SimpleITK.Hash`` of an image (SHA1 of its pixel buffer), from its array: the same
    digest, ten times faster (hashlib instead of SimpleITK's filter pipeline; the buffer is
    read in place, not copied to bytes first)."""
    return hashlib.sha1(np.ascontiguousarray(arr)).hexdigest()


def _region_pixels(mask_arr: np.ndarray, label: int):
    """``(roi, rows, columns, bounds)`` of the pixels of ``mask_arr`` equal to ``label``
    (row-major); ``bounds`` is ``(y0, y1, x0, x1)``, the inclusive bounding box (``None`` when
    the region is empty), read off the rows and columns that hold a pixel, so the callers need
    no min/max pass over the pixel lists (ten of them per region before). The pixels are
    looked up inside the region's bounding box only (a ring's box is a third of an
    ultrasound frame)."""
    roi = mask_arr == label
    rows = np.flatnonzero(roi.any(1))
    if not rows.size:
        return roi, np.zeros(0, np.intp), np.zeros(0, np.intp), None
    cols = np.flatnonzero(roi.any(0))
    y0, x0, y1, x1 = int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])
    ys, xs = np.nonzero(roi[y0:y1 + 1, x0:x1 + 1])
    return roi, ys + y0, xs + x0, (y0, y1, x0, x1)


class NativeExtractor:
    """Configure once from a params dict (as loaded from the YAML), extract many times."""

    def __init__(self, params: dict, source: str = "params"):
        params = params or {}
        self.settings = dict(params.get("setting") or {})
        self._cache_image, self._cache, self._cache_box = None, [], None
        self._diag_image, self._diag = None, {}
        self._array_image, self._array = None, None
        unknown = sorted(set(self.settings) - SETTINGS
                         | ({"preCrop"} if self.settings.get("preCrop") else set()))
        if unknown:
            raise InputError(f"{source}: setting {unknown[0]!r} is not implemented by the "
                             "native engine yet (use --engine pyradiomics)")
        types = params.get("imageType") or {"Original": {}}
        self.image_types = {t: dict(kw or {}) for t, kw in types.items()}
        other = sorted(set(types) - IMAGE_TYPES)
        if other:
            raise InputError(f"{source}: image type {other[0]!r} is not implemented by the "
                             "native engine yet (use --engine pyradiomics)")
        classes = params.get("featureClass")
        if classes is None:
            classes = {c: None for c in CLASSES}
        bad = sorted(set(classes) - set(CLASSES))
        if bad:
            raise InputError(f"{source}: feature class {bad[0]!r} is not implemented by the "
                             "native engine (shape is 3D-only; 2D images use shape2D)")
        self.classes = {}
        for cls, names in classes.items():
            allowed = set(CLASSES[cls]) | set(OPTIONAL.get(cls, ()))
            # pyradiomics lists a class's defaults in the order of its get<Name>FeatureValue
            # methods' names ("MeanAbsoluteDeviation" before "Mean")
            names = list(names) if names else sorted(CLASSES[cls],
                                                     key=lambda n: n + "FeatureValue")
            wrong = [n for n in names if n not in allowed]
            if wrong:
                raise InputError(f"{source}: {cls} has no feature {wrong[0]!r}")
            self.classes[cls] = names

    def _filtered(self, image, arr, box=None):
        """Every filtered image of ``image``, computed once for all its regions. Local
        filters (LBP2D) are computed on ``box`` (row and column slices; the whole image when
        not given) and computed again only for a box outside the one they were computed on."""
        if self._cache_image is not image:
            self._cache, self._cache_box = [], None
            for kind, custom in self.image_types.items():
                kw = {**self.settings, **custom}
                if kind == "LBP2D":
                    self._cache.append([kind, "lbp-2D", None, kw])     # below, on the box
                    continue
                self._cache += [[kind, prefix, full, kw] for prefix, full in
                                filtered_images(image, arr, kind, kw)]
            self._cache_image = image   # held, so the identity check cannot be fooled
        if box is None:
            box = (slice(0, arr.shape[0]), slice(0, arr.shape[1]))
        old = self._cache_box
        if any(e[0] == "LBP2D" for e in self._cache) and not (
                old and all(o.start <= b.start and b.stop <= o.stop for o, b in zip(old, box))):
            if old:       # a box outside the last one: both (regions of one image overlap)
                box = tuple(slice(min(o.start, b.start), max(o.stop, b.stop))
                            for o, b in zip(old, box))
            for e in self._cache:
                if e[0] == "LBP2D":
                    e[2] = lbp_image(arr, e[3], box)
            self._cache_box = box
        return [(prefix, full, kw) for _, prefix, full, kw in self._cache]

    def _image_array(self, image: sitk.Image) -> np.ndarray:
        st = self.settings
        if st.get("normalize"):
            # pyradiomics: SimpleITK's Normalize on the whole image, outliers clipped at +-n SD,
            # then the scale
            image = sitk.Normalize(image)
            arr = sitk.GetArrayFromImage(image)
            n = st.get("removeOutliers")
            if n is not None:
                arr = np.clip(arr, -n, n)
            return arr * st.get("normalizeScale", 1)
        return sitk.GetArrayFromImage(image)

    def diagnostics(self, image: sitk.Image, mask: sitk.Image, label: int, region=None) -> dict:
        """pyradiomics' cheap provenance entries for the image and region, same names and values.

        The image's entries are computed once per image (pyradiomics redoes them, hashes
        included, for every region: 40 ms a call on ultrasound frames).
        """
        if self._diag_image is not image:
            arr = sitk.GetArrayViewFromImage(image).astype(float)
            self._diag = {
                "diagnostics_Versions_Engine": f"HER2RadiomicsLib native {ENGINE_VERSION}",
                "diagnostics_Image-original_Hash": _sha1(sitk.GetArrayViewFromImage(image)),
                "diagnostics_Image-original_Dimensionality": f"{image.GetDimension()}D",
                "diagnostics_Image-original_Spacing": image.GetSpacing(),
                "diagnostics_Image-original_Size": image.GetSize(),
                "diagnostics_Image-original_Mean": float(np.mean(arr)),
                "diagnostics_Image-original_Minimum": float(np.min(arr)),
                "diagnostics_Image-original_Maximum": float(np.max(arr))}
            self._diag_image = image
        from scipy import ndimage  # when run: the engine loads scipy's parts where used
        mask_arr = sitk.GetArrayViewFromImage(mask)
        roi, ys, xs, bounds = region if region is not None else _region_pixels(mask_arr, label)
        out = dict(self._diag)
        # pyradiomics hashes the mask after casting it to UInt32
        out["diagnostics_Mask-original_Hash"] = _sha1(mask_arr.astype(np.uint32))
        out["diagnostics_Mask-original_Spacing"] = mask.GetSpacing()
        out["diagnostics_Mask-original_Size"] = mask.GetSize()
        if len(xs):
            y0, y1, x0, x1 = bounds
            out["diagnostics_Mask-original_BoundingBox"] = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
            out["diagnostics_Mask-original_VoxelNum"] = int(len(xs))
            # fully connected, as pyradiomics counts "volumes" (8-neighbourhood in 2D)
            box = roi[y0:y1 + 1, x0:x1 + 1]   # same count, less work
            out["diagnostics_Mask-original_VolumeNum"] = int(
                ndimage.label(box, structure=np.ones((3, 3)))[1])
            centre = (float(xs.mean()), float(ys.mean()))
            out["diagnostics_Mask-original_CenterOfMassIndex"] = centre
            out["diagnostics_Mask-original_CenterOfMass"] = \
                mask.TransformContinuousIndexToPhysicalPoint(centre)
        return out

    def _prepare(self, image: sitk.Image, mask: sitk.Image):
        """Validate one region and return ``(out, image, arr, roi, box)``: its diagnostics
        and shape features, the image it is computed on (resampled around the region when
        asked), that image's array, the region's mask and bounding box."""
        if image.GetDimension() != 2:
            raise InputError("the native engine handles 2D images")
        st = self.settings
        label = int(st.get("label", 1))
        region = _region_pixels(sitk.GetArrayViewFromImage(mask), label)
        diag = self.diagnostics(image, mask, label, region) \
            if st.get("additionalInfo", True) else {}
        if self._array_image is not image:       # once per image, not per region
            self._array, self._array_image = self._image_array(image), image
        arr = self._array
        if self.resamples:
            # resampling follows the region, so each region gets its own image and filters
            src = sitk.GetImageFromArray(arr)
            src.CopyInformation(image)
            image, mask = resample_like_pyradiomics(src, mask, st)
            arr = sitk.GetArrayFromImage(image)
            region = _region_pixels(sitk.GetArrayViewFromImage(mask), label)
        roi, ys, xs, bounds = region
        if not len(ys):
            raise InputError(f"label {label} not present in the mask")
        y0, y1, x0, x1 = bounds
        ndims = int(y1 > y0) + int(x1 > x0)
        need = int(st.get("minimumROIDimensions", 2))
        if ndims < need:
            raise InputError(f"mask has too few dimensions (number of dimensions {ndims}, "
                             f"minimum required {need})")
        size = st.get("minimumROISize")
        if size is not None and len(ys) <= size:
            raise InputError(f"size of the ROI is too small (minimum size: {size})")
        box = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        out = diag
        if "shape2D" in self.classes:      # shape: once, on the original image's mask
            vals = E.shape2d(roi[box], image.GetSpacing(), names=self.classes["shape2D"])
            out.update({f"original_shape2D_{k}": v for k, v in vals.items()})
        return out, image, arr, roi, box

    @property
    def resamples(self) -> bool:
        st = self.settings
        return (st.get("resampledPixelSpacing") is not None
                and st.get("interpolator", "sitkBSpline") is not None)

    def execute(self, image: sitk.Image, mask: sitk.Image) -> dict:
        """Features of one region (``mask == label``) of a 2D image, diagnostics first."""
        out, image, arr, roi, box = self._prepare(image, mask)
        spacing = image.GetSpacing()
        for prefix, full, kw in self._filtered(image, arr, box):
            out.update(self._texture(full[box], roi[box], spacing, kw, prefix))
        return out

    def execute_many(self, image: sitk.Image, masks: dict, progress=None) -> dict:
        """Features of several regions of one 2D image, computed together.

        Returns ``{region: features}`` in the order of ``masks``, each as :meth:`execute`
        returns it, or the exception that region raised (the others are still computed).
        Regions share every pass over their union (:mod:`.multi`); those that cannot (a
        fixed bin count, resampling around each region) are computed one by one.
        ``progress(done, total)`` is called before each filtered image; ``False`` stops.
        """
        results, ready = {}, {}
        for name, mask in masks.items():
            try:
                ready[name] = self._prepare(image, mask)
            except Exception as exc:  # noqa: BLE001 -- that region fails; the others go on
                results[name] = exc
        if self.resamples or len(ready) < 2:
            for name, (out, im, arr, roi, box) in ready.items():
                try:
                    for prefix, full, kw in self._filtered(im, arr, box):
                        out.update(self._texture(full[box], roi[box], im.GetSpacing(), kw,
                                                 prefix))
                    results[name] = out
                except Exception as exc:  # noqa: BLE001 -- that region fails; the others go on
                    results[name] = exc
            return {n: results[n] for n in masks}
        names = list(ready)
        spacing = image.GetSpacing()
        boxes = [ready[n][4] for n in names]
        union_box = tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes))
                          for d in range(2))
        failed = {}
        filtered = self._filtered(image, self._array, union_box)
        for step, (prefix, full, kw) in enumerate(filtered):
            if progress is not None and progress(step, len(filtered)) is False:
                return None
            shared = texture_many(full, [ready[n][3] for n in names], spacing,
                                  self.classes, kw, box=union_box)
            for n, res in zip(names, shared):
                if n in failed:
                    continue
                out, _, _, roi, box = ready[n]
                try:
                    if res is None:
                        res = self._texture(full[box], roi[box], spacing, kw, prefix)
                    else:
                        res = {f"{prefix}_{k}": v for k, v in res.items()}
                except Exception as exc:  # noqa: BLE001 -- that region fails; the others go on
                    failed[n] = exc
                    continue
                out.update(res)
        for n in names:
            results[n] = failed.get(n, ready[n][0])
        return {n: results[n] for n in masks}

    def _texture(self, img, m, spacing, st, prefix) -> dict:
        settings = E.Settings.from_params(st)
        region = E.Region.of(img, m, spacing, settings)    # once, for every texture class
        out = {}
        for cls, names in self.classes.items():
            if cls == "shape2D":
                continue
            vals = E.CLASS_FUNCTIONS[cls](region, settings, names)
            out.update({f"{prefix}_{cls}_{k}": v for k, v in vals.items()})
        return out


def resample_like_pyradiomics(image: sitk.Image, mask: sitk.Image, st: dict):
    """Resample image and mask to ``resampledPixelSpacing`` on a grid around the region, as
    pyradiomics does: the region's bounding box scaled to the new spacing and widened by
    ``padDistance`` pixels (clipped to the image), the first new pixel centred so that the new
    grid covers the old pixels' extent, ``interpolator`` for the image and nearest neighbour for
    the mask. Spacing already equal: the image is only cropped to the box plus padDistance."""
    label = int(st.get("label", 1))
    pad = st.get("padDistance", 5)
    mask_sp = np.array(mask.GetSpacing())
    new_sp = np.array(st["resampledPixelSpacing"], dtype=np.float64)
    if len(new_sp) != mask.GetDimension():
        raise InputError(f"resampledPixelSpacing {list(new_sp)}: give {mask.GetDimension()} "
                         "values for a 2D image")
    new_sp = np.where(new_sp == 0, mask_sp, new_sp)
    ls = sitk.LabelShapeStatisticsImageFilter()
    ls.Execute(mask)
    if label not in ls.GetLabels():
        raise InputError(f"label {label} not present in the mask")
    nd = mask.GetDimension()
    bb = np.array(ls.GetBoundingBox(label))
    new_sp = np.where(bb[nd:] != 1, new_sp, mask_sp)   # no resampling along a flat axis
    if np.allclose(np.array(image.GetSpacing()), new_sp):
        lo = np.maximum(bb[:nd] - pad, 0)
        hi = np.minimum(bb[:nd] + bb[nd:] - 1 + pad, np.array(mask.GetSize()) - 1)
        box = tuple(slice(int(lo[d]), int(hi[d]) + 1) for d in range(nd))
        return image[box], mask[box]
    ratio = mask_sp / new_sp
    lo = np.floor((bb[:nd] - 0.5) * ratio - pad)
    hi = np.ceil((bb[:nd] + bb[nd:] - 0.5) * ratio + pad)
    top = np.ceil(np.array(mask.GetSize()) * ratio) - 1
    lo = np.where(lo < 0, 0, lo)
    hi = np.where(hi > top, top, hi)
    size = np.array(hi - lo + 1, dtype="int").tolist()
    origin_index = np.array(.5 * (new_sp - mask_sp) / mask_sp) + lo / ratio
    origin = mask.TransformContinuousIndexToPhysicalPoint(origin_index)
    interp = st.get("interpolator", sitk.sitkBSpline)
    if isinstance(interp, str):
        interp = getattr(sitk, interp, sitk.sitkBSpline)
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing(new_sp)
    f.SetOutputDirection(np.array(mask.GetDirection()))
    f.SetSize(size)
    f.SetOutputOrigin(origin)
    f.SetOutputPixelType(image.GetPixelID())
    f.SetInterpolator(interp)
    out_image = f.Execute(image)
    f.SetOutputPixelType(mask.GetPixelID())
    f.SetInterpolator(sitk.sitkNearestNeighbor)
    return out_image, f.Execute(mask)
