"""Intensity normalisation and letterboxing shared by CNN training and inference.

Letterboxing keeps the aspect ratio: the image is scaled by ``size / max(H, W)`` and pasted at
the centre of a black ``size x size`` canvas.  :class:`Letterbox` records the exact mapping so
that network outputs are mapped back onto the original pixel grid (and hence onto the original
physical geometry, which the caller re-attaches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# torch is imported inside Letterbox's resampling methods: it is optional (the [torch] extra)
# and costs seconds, and normalise_intensity and the geometry serve callers without it

# Robust min-max: ultrasound screenshots carry saturated annotation text and a black background,
# so plain min/max or z-scores are dominated by them; percentiles are not.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


def normalise_intensity(arr: np.ndarray) -> np.ndarray:
    """Map grey values to [0, 1] with the 0.5th and 99.5th percentiles, clipping outside.

    Parameters
    ----------
    arr : ndarray
        2D grey image, any numeric dtype.

    Returns
    -------
    ndarray of float32 in [0, 1].
    """
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = np.percentile(arr, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if hi - lo < 1e-6:
        return np.zeros_like(arr, dtype=np.float32)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """Exact mapping between an ``(H, W)`` pixel grid and a ``size x size`` network canvas."""

    height: int
    width: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.height, self.width)

    @property
    def inner_shape(self) -> tuple[int, int]:
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))

    @property
    def offset(self) -> tuple[int, int]:
        ih, iw = self.inner_shape
        return ((self.size - ih) // 2, (self.size - iw) // 2)

    def forward(self, arr: np.ndarray, mode: str = "bilinear") -> np.ndarray:
        """Resize ``arr`` (H, W) into the canvas; padding is 0."""
        import torch
        import torch.nn.functional as F
        ih, iw = self.inner_shape
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        if mode == "nearest":
            r = F.interpolate(t, size=(ih, iw), mode="nearest")
        else:
            # antialias when shrinking, so speckle does not alias into false texture
            r = F.interpolate(t, size=(ih, iw), mode="bilinear", align_corners=False,
                              antialias=(ih < self.height or iw < self.width))
        out = np.zeros((self.size, self.size), dtype=np.float32)
        oy, ox = self.offset
        out[oy:oy + ih, ox:ox + iw] = r[0, 0].numpy()
        return out

    def inverse(self, canvas: np.ndarray) -> np.ndarray:
        """Map a canvas-sized map (e.g. probabilities) back to the original ``(H, W)`` grid."""
        import torch
        import torch.nn.functional as F
        ih, iw = self.inner_shape
        oy, ox = self.offset
        crop = np.ascontiguousarray(canvas[oy:oy + ih, ox:ox + iw], dtype=np.float32)
        t = torch.from_numpy(crop)[None, None]
        r = F.interpolate(t, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return r[0, 0].numpy()
