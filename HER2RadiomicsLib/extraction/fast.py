"""A compiled GLRLM pass for the shared pass (:mod:`.multi`), when numba is installed.

``pip install 'HER2RadiomicsLib[fast]'`` adds numba; without it nothing here is compiled and
:mod:`.multi` runs its numpy passes, the reference. With it, the run lengths of every region
at every angle come from one loop along the lines of ``multi._Union``'s padded grids
(``raw``: union levels, 0 outside; ``code``: bit r set for region r) instead of segments found
per atom and joined per region. The matrices are the numpy path's exactly (the counts are
integers, whatever the order they are taken in; the columns are every run length of any
region at any angle, as numpy's, so every later sum sees the same arrays):
Testing/test_engine_fast.py compares every feature bit for bit.

Why only GLRLM: measured on a BUS-BRA case (tumour + 3 rings, 58,000-pixel box, CPU time
per pass), the compiled GLRLM took 1.85 ms against numpy's 2.57 ms, while compiled GLDM
(2.45 vs 1.18 ms), NGTDM (2.12 vs 1.97 ms) and GLSZM (2.36 vs 2.24 ms) lost to numpy's
whole-array passes (their branches per pixel cost more than the extra array passes).
Importing numba costs about 0.5 s once per process; for a handful of cases the numpy path is
as fast overall.

So the compiled pass is opt-in twice: numba installed *and* ``HER2RADIOMICS_NUMBA=1``.
Measured per process: importing numba and loading the cached pass cost about 0.75 s of CPU,
against 0.7 ms saved per filtered image; a 48-image ``extract`` (cui2023, rings) took 4.8 s
with it and about 3.1 s without, so it pays from roughly a thousand filtered images on.
Compiled code is cached on disk (numba's ``cache=True``): the very first run compiles for a
few seconds.
"""
from __future__ import annotations

import os

import numpy as np

_KERNELS = None


def available() -> bool:
    """True when asked for (``HER2RADIOMICS_NUMBA=1``) and numba is importable."""
    if os.environ.get("HER2RADIOMICS_NUMBA", "0") != "1":
        return False
    return _kernels() is not None


def _kernels():
    """The compiled kernels (compiled, or read from numba's cache, on first use), or None."""
    global _KERNELS
    if _KERNELS is None:
        try:
            import numba  # noqa: F401 -- the optional extra; absent: the numpy path
        except ImportError:
            _KERNELS = False
        else:
            _KERNELS = _compile()
    return _KERNELS or None


def _compile():
    from numba import njit

    @njit(cache=True, nogil=True)
    def glrlm(raw, code, which, dirs, nr):
        J, A = which.size, dirs.shape[0]
        H, W = raw.shape
        L = max(H, W) + 1
        hist = np.zeros((J, nr, L, A), np.int32)
        seen = np.zeros(L, np.bool_)           # run lengths of any region at any angle
        widest = np.zeros((J, A), np.int64)    # most region pixels on one line
        cur_lv = np.zeros(J, np.int64)
        cur_len = np.zeros(J, np.int64)
        on_line = np.zeros(J, np.int64)
        for a in range(A):
            dy, dx = dirs[a, 0], dirs[a, 1]
            for y0 in range(H):
                for x0 in range(W):
                    # a line starts where its predecessor falls off the grid
                    yp, xp = y0 - dy, x0 - dx
                    if 0 <= yp < H and 0 <= xp < W:
                        continue
                    cur_len[:] = 0
                    on_line[:] = 0
                    y, x = y0, x0
                    while 0 <= y < H and 0 <= x < W:
                        cp = np.int64(code[y, x])
                        lp = raw[y, x]
                        for j in range(J):
                            if cp & (np.int64(1) << which[j]):
                                on_line[j] += 1
                                if cur_len[j] > 0 and cur_lv[j] == lp:
                                    cur_len[j] += 1
                                    continue
                                if cur_len[j] > 0:
                                    hist[j, cur_lv[j], cur_len[j], a] += 1
                                    seen[cur_len[j]] = True
                                cur_lv[j] = lp
                                cur_len[j] = 1
                            elif cur_len[j] > 0:
                                hist[j, cur_lv[j], cur_len[j], a] += 1
                                seen[cur_len[j]] = True
                                cur_len[j] = 0
                        y += dy
                        x += dx
                    for j in range(J):
                        if cur_len[j] > 0:        # never: the padding ends every line
                            hist[j, cur_lv[j], cur_len[j], a] += 1
                            seen[cur_len[j]] = True
                        if on_line[j] > widest[j, a]:
                            widest[j, a] = on_line[j]
        return hist, seen, widest

    return {"glrlm": glrlm}


# The compiled pass counts into a (regions, levels, run length, angle) array: above this many
# cells (4 MB of int32) zeroing and reading it costs more than the numpy path's passes
# (many grey levels: the default preset's binWidth 5 on filtered images)
MAX_CELLS = 1_000_000


def glrlm_fits(u, n_regions: int, n_angles: int = 4) -> bool:
    """Whether :func:`glrlm_matrices` pays on this union (see :data:`MAX_CELLS`)."""
    return n_regions * u.nr * (max(u.code.shape) + 1) * n_angles <= MAX_CELLS


def glrlm_matrices(u, regions, present, angles):
    """:func:`.multi._glrlm`'s run counts before normalising: per region (levels present, run
    lengths, angles), an angle zeroed where the region is one pixel thick across every line;
    and the run lengths (columns)."""
    k = _kernels()
    hist, seen, widest = k["glrlm"](u.raw, u.code, np.array(regions, np.int64),
                                    np.array(angles, np.int64).reshape(-1, 2), u.nr)
    jvector = np.flatnonzero(seen)
    Ps = []
    for j, r in enumerate(regions):
        P = hist[j][present[r][0]][:, jvector, :].astype(np.float64)
        P[:, :, widest[j] < 2] = 0.0
        Ps.append(P)
    return Ps, jvector.astype(np.float64)

