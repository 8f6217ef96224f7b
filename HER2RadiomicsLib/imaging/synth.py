"""The built-in synthetic breast-ultrasound cohort (demo and test data for HER2 tasks).

No public breast-ultrasound dataset carries HER2 labels, so the library generates its own cohort
with a planted, documented signal.  Each image is simulated, deterministically from
``(seed, case index)``, in four steps:

1. **Anatomy** (echogenicity map, physical mm): skin line, subcutaneous fat lobules with
   Cooper's ligaments, glandular tissue with smooth texture, pectoral muscle with striations.
2. **Lesion**: a hypoechoic mass whose boundary is a radial function ``r(theta)``:
   circumscribed (ellipse), irregular (low-order harmonics) or spiculated (narrow spikes);
   internal heterogeneity (smooth random modulation), echogenic calcification-like foci,
   an echogenic peritumoral halo, and posterior enhancement or shadowing.
3. **Imaging**: complex Gaussian scatterers weighted by the echogenicity, convolved with a
   site-specific Gaussian point-spread function (axial finer than lateral) -> Rayleigh-
   distributed envelope (fully developed speckle); depth attenuation with partial time-gain
   compensation; log compression to 8 bits with the site's dynamic range and gain; electronic
   noise.
4. **Display**: a linear (rectangular) or sector field of view on a black background with
   burned-in annotation text and a depth ruler outside the FOV (site C exports RGB screenshots).

Sites (scanner batch effects for harmonisation) differ in pixel spacing, PSF (resolution),
gain, dynamic range, attenuation compensation, FOV shape and export format.

Planted HER2 signal (class means; every case draws around them, so classes overlap):

================================  ======  ======  ========
latent (unit)                     zero    low     positive
================================  ======  ======  ========
internal heterogeneity (a.u.)     0.25    0.40    0.60
peritumoral halo strength (a.u.)  0.10    0.30    0.55
peritumoral stroma texture (a.u.) 0.10    0.45    0.55
calcification foci (Poisson mean) 0.8     1.5     3.5
spiculated margin probability     0.45    0.30    0.15
posterior enhancement probability 0.25    0.40    0.60
================================  ======  ======  ========

The halo is an echogenic rim that decays within ~2 mm of the boundary. The **stroma texture**
is the signal the peritumoral ring design can find: the echogenicity outside the lesion is
modulated by a fine random texture (correlation ~0.3 mm) of log-amplitude ``texture x w(d)``,
where ``w`` is 0 at the boundary, rises linearly from 1 to 3 mm, is 1 from 3 to 5 mm and falls
to 0 at 8 mm (distance ``d`` from the boundary). It is strongest in the 3-5 mm band, as the
peritumoral2025 paper's best scenario (intra + 5 mm) suggests: the tumour alone does not see
it, the 0-3 mm ring sees its rising edge, the 0-5 mm ring most of it, the 0-8 mm ring all of
it diluted by its 5-8 mm tail. Each case draws its strength around the class mean with
SD 0.15 (from its own random stream, so every other parameter of a case is unchanged).

Sentinel-lymph-node metastasis (``sln``, zhao2025's second endpoint) has log-odds
``-1.2 + 0.12 x (lesion size - 13 mm) + 0.8 x HER2-positive`` (true class); the images carry
no direct trace of it, only through size and the HER2 signal.

Label noise: 12 % of cases get a label drawn at random (IHC misreads), so a sound pipeline
reaches moderate AUCs (about 0.7-0.85), not 1.0.  Clinical variables (age, menopausal status,
ER, PR, Ki-67, lesion size) depend weakly on the class as in the literature (HER2-positive:
more ER/PR-negative, higher Ki-67).

A subset of cases is contoured by several readers: each reader's contour is the true boundary
low-pass filtered (readers do not trace every spicule), scaled by a reader bias and a per-case
random offset, and perturbed by a smooth random deformation.
"""
from __future__ import annotations

import csv
import io as _io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from joblib import Parallel, delayed
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage as ndi

from .io import atomic_write_text

log = logging.getLogger(__name__)

CLASSES = ("zero", "low", "positive")
CLASS_PRIOR = (0.30, 0.45, 0.25)
LABEL_NOISE = 0.12
SIGNAL = {  # per class: heterogeneity, halo, calcification mean, P(spiculated), P(enhancement)
    "zero": (0.25, 0.10, 0.8, 0.45, 0.25),
    "low": (0.40, 0.30, 1.5, 0.30, 0.40),
    "positive": (0.60, 0.55, 3.5, 0.15, 0.60),
}
#: sentinel-node metastasis log-odds: intercept, per mm of lesion size above 13, HER2-positive
SLN_LOGIT = (-1.2, 0.12, 0.8)
#: per class: mean strength of the peritumoral stroma texture (see the module docstring)
PERI_TEXTURE = {"zero": 0.05, "low": 0.65, "positive": 0.75}
PERI_TEXTURE_SD = 0.15
#: the texture's depth profile (mm from the boundary): rises 1 -> 3, flat to 5, gone at 8
PERI_TEXTURE_MM = (1.0, 3.0, 5.0, 8.0)


def peri_texture_weight(d_mm):
    """The stroma texture's weight at distance ``d_mm`` outside the lesion (0..1)."""
    a, b, c, e = PERI_TEXTURE_MM
    d = np.asarray(d_mm, dtype=float)
    return np.clip(np.minimum((d - a) / (b - a), (e - d) / (e - c)), 0.0, 1.0)


@dataclass(frozen=True)
class Site:
    name: str
    scanner: str
    spacing_mm: float
    psf_axial_mm: float
    psf_lateral_mm: float
    gain_db: float
    dynamic_range_db: float
    residual_atten_db_per_cm: float
    fov: str            # "linear" | "sector"
    rgb_export: bool
    share: float


SITES = (
    Site("A", "SynthSono L12 (linear 12 MHz)", 0.12, 0.20, 0.45, 0.0, 42.0, 0.5, "linear", False,
         0.45),
    Site("B", "EchoSim C9 (curvilinear 9 MHz)", 0.15, 0.28, 0.70, -2.0, 38.0, 0.9, "sector",
         False, 0.35),
    Site("C", "VirtuScan L15 (linear 15 MHz, RGB screenshots)", 0.10, 0.16, 0.35, 1.5, 46.0, 0.3,
         "linear", True, 0.20),
)
READERS = ("R1", "R2", "R3")
_READER_BIAS = {"R1": 0.0, "R2": 0.05, "R3": -0.04}   # relative radius change
FOV_DEPTH_MM = 32.0
FOV_WIDTH_MM = 38.0
_GLYPHS = np.random.default_rng(7).random((40, 7, 5)) < 0.45   # fixed 5x7 "font"


def _smooth_field(rng, shape, sigma_px):
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return f / (f.std() + 1e-12)


def _radial(rng, margin):
    """Boundary radius multiplier r(theta) on 360 samples, mean ~1."""
    th = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    r = np.ones_like(th)
    if margin in ("irregular", "spiculated"):
        for k in range(2, 7):
            r += rng.uniform(0.03, 0.10) / (k / 2) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    else:
        r += rng.uniform(0.0, 0.04) * np.cos(2 * th + rng.uniform(0, 2 * np.pi))
    if margin == "spiculated":
        for _ in range(rng.integers(6, 12)):
            c = rng.uniform(0, 2 * np.pi)
            d = np.angle(np.exp(1j * (th - c)))
            r += rng.uniform(0.2, 0.45) * np.exp(-0.5 * (d / rng.uniform(0.03, 0.06)) ** 2)
    return r


def _lesion_mask(X, Z, x0, z0, a, b, rad, rot):
    dx, dz = X - x0, Z - z0
    c, s = np.cos(rot), np.sin(rot)
    u, v = (c * dx + s * dz) / a, (-s * dx + c * dz) / b
    rho = np.hypot(u, v)
    th = np.mod(np.arctan2(v, u), 2 * np.pi)
    idx = th / (2 * np.pi) * len(rad)
    i0 = np.floor(idx).astype(int) % len(rad)
    w = idx - np.floor(idx)
    rr = rad[i0] * (1 - w) + rad[(i0 + 1) % len(rad)] * w
    return rho <= rr, rho / np.maximum(rr, 1e-6)


def _draw_text(canvas, y, x, n_chars, rng, value=230, color=None):
    for i in range(n_chars):
        g = _GLYPHS[rng.integers(len(_GLYPHS))]
        ys, xs = np.nonzero(g)
        yy, xx = y + ys, x + i * 7 + xs
        ok = (yy >= 0) & (yy < canvas.shape[0]) & (xx >= 0) & (xx < canvas.shape[1])
        if color is not None and canvas.ndim == 3:
            canvas[yy[ok], xx[ok]] = color
        else:
            canvas[yy[ok], xx[ok]] = value


def _case_params(rng, site: Site):
    true = CLASSES[rng.choice(3, p=CLASS_PRIOR)]
    het_m, halo_m, calc_m, p_spic, p_enh = SIGNAL[true]
    spic = rng.random() < p_spic
    margin = "spiculated" if spic else ("irregular" if rng.random() < 0.45 else "circumscribed")
    observed = true if rng.random() > LABEL_NOISE else CLASSES[rng.integers(3)]
    size_mm = float(np.clip(rng.lognormal(np.log(15 if true == "positive" else 13), 0.3), 6, 26))
    age = float(np.clip(rng.normal(53 if true == "positive" else 57, 11), 28, 88))
    meno = bool(age > 51 if rng.random() > 0.15 else age <= 51)
    er = bool(rng.random() < {"zero": 0.80, "low": 0.85, "positive": 0.50}[true])
    pr = bool(er and rng.random() < {"zero": 0.80, "low": 0.80, "positive": 0.60}[true])
    ki67 = float(np.clip(rng.normal({"zero": 18, "low": 22, "positive": 34}[true], 11), 1, 95))
    if observed == "zero":
        ihc = "0"
    elif observed == "low":
        ihc = "1+" if rng.random() < 0.6 else "2+"
    else:
        ihc = "3+" if rng.random() < 0.7 else "2+"
    # the stroma texture from a child stream: every draw above and in simulate_case is the
    # same as before it existed
    child = rng.spawn(1)[0]
    peri = dict(peri_texture=float(max(0.0, child.normal(PERI_TEXTURE[true], PERI_TEXTURE_SD))),
                peri_seed=int(child.integers(2 ** 31)))
    # sentinel-lymph-node metastasis (zhao2025's second endpoint): more likely with larger
    # and HER2-positive tumours (log-odds below), drawn last from the same child stream
    logit = SLN_LOGIT[0] + SLN_LOGIT[1] * (size_mm - 13) + SLN_LOGIT[2] * (true == "positive")
    peri["sln"] = int(child.random() < 1 / (1 + np.exp(-logit)))
    return dict(
        **peri,
        her2_true=true, her2=observed, her2_ihc=ihc,
        # IHC with the FISH result of 2+ cases: the five groups yin2024's subtasks compare
        her2_ihc_fish={"2+": "2+/FISH-" if observed == "low" else "2+/FISH+"}.get(ihc, ihc),
        margin=margin,
        heterogeneity=float(max(0.05, rng.normal(het_m, 0.13))),
        halo=float(max(0.0, rng.normal(halo_m, 0.17))),
        n_calc=int(rng.poisson(calc_m)),
        posterior="enhancement" if rng.random() < p_enh else (
            "shadowing" if spic and rng.random() < 0.7 else "none"),
        size_mm=size_mm, aspect=float(rng.uniform(0.55, 1.0 if margin != "spiculated" else 1.2)),
        rot=float(rng.normal(0, 0.2)), age=round(age, 1), menopausal=int(meno), er=int(er),
        pr=int(pr), ki67=round(ki67, 1))


def simulate_case(rng, site: Site, p: dict, view_seed: int | None = None):
    """Render one case. Returns ``(image uint8 (H,W) or (H,W,3), mask bool, fov bool, info)``."""
    sp = site.spacing_mm
    fov_h = int(round(FOV_DEPTH_MM / sp))
    fov_w = int(round(FOV_WIDTH_MM / sp))
    top = int(round(0.07 * fov_h)) + 8
    side = int(round(0.06 * fov_w)) + 6
    H, W = fov_h + top + 10, fov_w + 2 * side
    vr = np.random.default_rng(view_seed) if view_seed is not None else rng
    z = (np.arange(H) - top + 0.5) * sp          # depth below skin (mm)
    x = (np.arange(W) - W / 2 + 0.5) * sp         # lateral (mm)
    X, Z = np.meshgrid(x, z)

    # 1. anatomy
    fat_depth = 5 + 3 * _smooth_field(rng, (1, W), 60 / sp * 0.1)[0] * 0.4 + rng.uniform(0, 3)
    musc_depth = rng.uniform(24, 29) + 0.8 * _smooth_field(rng, (1, W), 40)[0]
    E = np.where(Z < 1.2, 1.8, 1.0)
    lob = _smooth_field(rng, (H, W), 1.5 / sp)
    fat = (Z >= 1.2) & (Z < fat_depth)
    E = np.where(fat, 0.25 * np.exp(0.3 * lob), E)
    E = np.where(fat & (np.abs(lob) < 0.06), 1.4, E)      # Cooper's ligaments / septa
    gl = (Z >= fat_depth) & (Z < musc_depth)
    tex = _smooth_field(rng, (H, W), (0.8 / sp, 2.5 / sp))
    E = np.where(gl, np.exp(0.45 * tex), E)
    musc = Z >= musc_depth
    stri = np.sin(2 * np.pi * Z / 1.1 + 0.6 * _smooth_field(rng, (H, W), 3 / sp))
    E = np.where(musc, 0.35 + 0.6 * (stri > 0.7), E)

    # 2. lesion
    a = p["size_mm"] / 2
    b = a * p["aspect"]
    # keep most lesions >= 8 mm from the FOV edges so that 8 mm rings are mostly inside
    lim = max(0.0, FOV_WIDTH_MM / 2 - a - 8)
    x0 = rng.uniform(-lim, lim)
    z_lo = b + 6
    z_hi = max(z_lo, FOV_DEPTH_MM - b - 8)
    z0 = float(np.clip(rng.uniform(min(fat_depth.mean() + b + 1, z_hi), z_hi), z_lo, z_hi))
    rad = _radial(rng, p["margin"])
    les, rel = _lesion_mask(X, Z, x0, z0, a, b, rad, p["rot"])
    inner = _smooth_field(rng, (H, W), 1.0 / sp)
    e_les = 0.05 * np.exp(1.6 * p["heterogeneity"] * inner)
    E = np.where(les, e_les, E)
    # peritumoral halo: echogenic rim decaying over ~2 mm outside the boundary (HER2 signal)
    dist_out = ndi.distance_transform_edt(~les, sampling=sp)
    halo = p["halo"] * np.exp(-dist_out / 2.0) * (~les)
    E = E * (1 + halo * (1 + 0.5 * _smooth_field(rng, (H, W), 0.6 / sp)))
    # peritumoral stroma texture, strongest 3-5 mm out (HER2 signal for the ring scenarios)
    if p.get("peri_texture", 0) > 0:
        trng = np.random.default_rng(p["peri_seed"])
        w = peri_texture_weight(dist_out) * (~les)
        E = E * np.exp(p["peri_texture"] * w * _smooth_field(trng, (H, W), 0.6 / sp))
    for _ in range(p["n_calc"]):
        ys, xs = np.nonzero(les)
        k = rng.integers(len(ys))
        E[max(0, ys[k] - 1):ys[k] + 2, max(0, xs[k] - 1):xs[k] + 2] = rng.uniform(3.5, 6)
    # posterior features: column below the lesion, fading with depth
    cols = les.any(axis=0)
    colw = ndi.gaussian_filter1d(cols.astype(float), 1.0 / sp)
    bottom = np.where(les.any(axis=1))[0].max()
    below = np.clip((np.arange(H) - bottom) / (2 / sp), 0, 1)[:, None]
    fade = np.exp(-np.clip(np.arange(H) - bottom, 0, None) * sp / 15)[:, None]
    if p["posterior"] == "enhancement":
        E = E * (1 + 0.5 * colw[None, :] * below * fade)
    elif p["posterior"] == "shadowing":
        E = E * (1 - 0.6 * colw[None, :] * below)

    # 3. imaging: complex scatterers * PSF -> Rayleigh envelope
    # Spatial compounding (3 looks with independent speckle) as on modern scanners: lowers the
    # speckle contrast from Rayleigh's 0.52 to ~0.3 without blurring anatomy.
    sig = (site.psf_axial_mm / sp, site.psf_lateral_mm / sp)
    amp = np.sqrt(np.clip(E, 1e-4, None))
    power = np.zeros((H, W))
    for _ in range(3):
        scat = (vr.standard_normal((H, W)) + 1j * vr.standard_normal((H, W))) / np.sqrt(2)
        field = scat * amp
        power += (ndi.gaussian_filter(field.real, sig) ** 2
                  + ndi.gaussian_filter(field.imag, sig) ** 2)
    env = np.sqrt(power / 3)
    atten = 10 ** (-site.residual_atten_db_per_cm * np.clip(Z, 0, None) / 10 / 20 * 2)
    env = env * atten
    # Reference level: glandular tissue (E ~ 1) maps to grey ~100 of 235, as on clinical
    # presets; darker fat and lesions fall below it in dB.
    ref_region = gl & ~les & (Z > 0)
    ref = np.median(env[ref_region]) if ref_region.any() else np.median(env)
    db = 20 * np.log10(env / ref + 1e-6) + site.gain_db
    img = np.clip((db + 0.574 * site.dynamic_range_db) / site.dynamic_range_db, 0, 1) * 235
    img = img + vr.normal(0, 2.0, img.shape)

    # 4. display: FOV, background, annotations
    fov = np.zeros((H, W), bool)
    if site.fov == "linear":
        fov[top:top + fov_h, side:side + fov_w] = True
    else:
        apex_z = -18.0
        r = np.hypot(X, Z - apex_z)
        ang = np.arctan2(X, Z - apex_z)
        fov = (r >= -apex_z) & (r <= -apex_z + FOV_DEPTH_MM) & (np.abs(ang) <= 0.5)
        fov &= (Z >= 0)
    les &= fov
    img = np.where(fov, img, 0)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if site.rgb_export:
        rgb = np.repeat(img[:, :, None], 3, axis=2)
        _draw_text(rgb, 3, side, 10, rng, color=(230, 210, 40))
        _draw_text(rgb, 3, W - side - 60, 6, rng, color=(230, 230, 230))
        out = rgb
    else:
        out = img
        _draw_text(out, 3, side, 12, rng)
        _draw_text(out, 3, W - side - 50, 5, rng, value=200)
    # depth ruler in the right margin (ticks every 5 mm)
    for zz in np.arange(0, FOV_DEPTH_MM + 0.1, 5.0):
        row = top + int(round(zz / sp))
        if row < H:
            out[row, W - side + 2:W - side + 5] = 220
    info = {"x0_mm": float(x0), "z0_mm": float(z0), "a_mm": float(a), "b_mm": float(b),
            "fat_depth_mm": float(np.mean(fat_depth)), "lesion_px": int(les.sum()),
            "radial": rad}
    return out, les, fov, info, (X, Z, x0, z0, a, b, p["rot"])


def reader_contour(rng, geom, rad, reader: str, fov):
    """A reader's contour: smoothed true boundary, reader bias, smooth random deformation."""
    X, Z, x0, z0, a, b, rot = geom
    k = np.fft.rfft(rad)
    k[5:] *= 0.25   # readers smooth out fine spicules
    smooth = np.fft.irfft(k, n=len(rad))
    th = np.linspace(0, 2 * np.pi, len(rad), endpoint=False)
    wob = sum(rng.normal(0, 0.02) * np.cos(m * th + rng.uniform(0, 2 * np.pi))
              for m in (2, 3, 4, 5))
    scale = 1 + _READER_BIAS[reader] + rng.normal(0, 0.025)
    m, _ = _lesion_mask(X, Z, x0, z0, a, b, smooth * scale * (1 + wob), rot)
    return m & fov


def _write_dicom(path, img, site: Site, fov_bbox, case_id, patient_id, seed):
    grey = img if img.ndim == 2 else np.round(img[..., :3] @ [0.299, 0.587, 0.114]).astype(np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"   # Ultrasound Image Storage
    sop = generate_uid(entropy_srcs=[str(seed), case_id, "sop"])
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(seed), patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(seed), case_id, "series"])
    ds.PatientID = patient_id
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.Modality = "US"
    ds.Manufacturer = "HER2Radiomics synthetic"
    ds.ManufacturerModelName = site.scanner
    ds.InstitutionName = f"Synthetic site {site.name}"
    ds.ImageComments = "SYNTHETIC - research use only"
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    reg = Dataset()
    reg.RegionSpatialFormat = 1
    reg.RegionDataType = 1
    reg.RegionFlags = 0
    reg.RegionLocationMinX0, reg.RegionLocationMinY0 = int(fov_bbox[0]), int(fov_bbox[1])
    reg.RegionLocationMaxX1, reg.RegionLocationMaxY1 = int(fov_bbox[2]), int(fov_bbox[3])
    reg.PhysicalUnitsXDirection = 3
    reg.PhysicalUnitsYDirection = 3
    reg.PhysicalDeltaX = site.spacing_mm / 10.0
    reg.PhysicalDeltaY = site.spacing_mm / 10.0
    reg.ReferencePixelX0 = 0
    reg.ReferencePixelY0 = 0
    ds.SequenceOfUltrasoundRegions = [reg]
    ds.PixelData = np.ascontiguousarray(grey, dtype=np.uint8).tobytes()
    try:
        ds.save_as(str(path), enforce_file_format=True)        # pydicom >= 3
    except TypeError:   # pydicom 2.4, the newest for Python 3.9 (Slicer 5.8)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)


def _png(path, arr):
    img = sitk.GetImageFromArray(arr, isVector=arr.ndim == 3)
    sitk.WriteImage(img, str(path))


def generate_cohort(out_dir, n_cases: int = 120, seed: int = 42, reader_fraction: float = 0.25,
                    second_view_fraction: float = 0.2, jobs: int = 1, progress: bool = False):
    """Generate the synthetic cohort.

    Parameters
    ----------
    out_dir : path
        Receives ``images/`` (DICOM with ultrasound-region calibration, and PNG + ``.png.json``
        spacing sidecar), ``masks/``, ``readers/``, ``cohort.csv``, ``readers.csv`` and
        ``truth.json`` (the latent generator values per case, for documentation).
    n_cases : int
        Number of patients. Some get a second view (a separate image of the same lesion).
    seed : int
        Everything is deterministic from ``(seed, patient index)``.
    reader_fraction : float
        Share of patients (at least 4) contoured by three readers.
    jobs : int
        Parallel worker processes.

    Returns
    -------
    Path
        ``out_dir/cohort.csv``.
    """
    out = Path(out_dir)
    for sub in ("images", "masks", "readers"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n_readers = max(4, int(round(n_cases * reader_fraction))) if reader_fraction > 0 else 0
    tasks = [(i, seed, out, i < n_readers, second_view_fraction) for i in range(n_cases)]
    res = Parallel(n_jobs=jobs)(delayed(_generate_patient)(*t) for t in tasks)
    rows, rrows, truth = [], [], {}
    for r, rr, t in res:
        rows += r
        rrows += rr
        truth.update(t)
    _write_csv(out / "cohort.csv", rows)
    _write_csv(out / "readers.csv", rrows, ["case_id", "image", "reader", "mask"])
    meta = {"seed": seed, "n_patients": n_cases, "n_images": len(rows), "classes": CLASSES,
            "class_prior": CLASS_PRIOR, "label_noise": LABEL_NOISE,
            "signal": {k: {**dict(zip(["heterogeneity", "halo", "calcifications_mean",
                                       "p_spiculated", "p_enhancement"], v)),
                           "peri_texture": PERI_TEXTURE[k]}
                       for k, v in SIGNAL.items()},
            "peri_texture_profile_mm": list(PERI_TEXTURE_MM),
            "sites": [s.__dict__ for s in SITES], "cases": truth}
    atomic_write_text(out / "truth.json", json.dumps(meta, indent=1))
    return out / "cohort.csv"


def _write_csv(path, rows, fields=None):
    buf = _io.StringIO()
    fields = fields or list(rows[0])
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _generate_patient(i, seed, out: Path, with_readers: bool, second_view_fraction: float):
    rng = np.random.default_rng([seed, i])
    site = SITES[rng.choice(len(SITES), p=[s.share for s in SITES])]
    p = _case_params(rng, site)
    pid = f"P{i + 1:04d}"
    n_views = 2 if rng.random() < second_view_fraction else 1
    rows, rrows, truth = [], [], {}
    state = rng.bit_generator.state
    for v in range(n_views):
        rng.bit_generator.state = state      # same anatomy and lesion, new speckle per view
        cid = f"{pid}-{v + 1}"
        view_seed = int(np.random.SeedSequence([seed, i, v, 7]).generate_state(1)[0])
        img, les, fov, info, geom = simulate_case(rng, site, p, view_seed=view_seed)
        ys, xs = np.nonzero(fov)
        bbox = (xs.min(), ys.min(), xs.max(), ys.max())
        _write_dicom(out / "images" / f"{cid}.dcm", img, site, bbox, cid, pid, seed)
        _png(out / "images" / f"{cid}.png", img)
        (out / "images" / f"{cid}.png.json").write_text(
            json.dumps({"spacing_mm": [site.spacing_mm, site.spacing_mm],
                        "source": "synthetic generator"}))
        _png(out / "masks" / f"{cid}.png", les.astype(np.uint8) * 255)
        ys, xs = np.nonzero(les)
        size = max(np.ptp(xs), np.ptp(ys)) * site.spacing_mm
        rows.append({"case_id": cid, "patient_id": pid, "image": f"images/{cid}.dcm",
                     "image_png": f"images/{cid}.png", "mask": f"masks/{cid}.png",
                     "site": site.name, "scanner": site.scanner, "age": p["age"],
                     "menopausal": p["menopausal"], "er": p["er"], "pr": p["pr"],
                     "ki67": p["ki67"], "lesion_size_mm": round(float(size), 1),
                     "margin": p["margin"], "her2": p["her2"], "her2_ihc": p["her2_ihc"],
                     "her2_ihc_fish": p["her2_ihc_fish"], "sln": p["sln"]})
        truth[cid] = {k: p[k] for k in ("her2_true", "heterogeneity", "halo", "peri_texture",
                                        "n_calc", "posterior", "margin")}
        if with_readers and v == 0:
            rr = np.random.default_rng([seed, i, 99])
            for reader in READERS:
                m = reader_contour(rr, geom, info["radial"], reader, fov)
                rel = f"readers/{cid}_{reader}.png"
                _png(out / rel, m.astype(np.uint8) * 255)
                rrows.append({"case_id": cid, "image": f"images/{cid}.dcm", "reader": reader,
                              "mask": rel})
    return rows, rrows, truth
