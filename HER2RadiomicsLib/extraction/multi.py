"""Texture features of several regions of one image in one pass (tumour and nested rings).

The regions of a peritumoral study overlap: the 0-3 mm ring lies inside the 0-5 mm ring,
which lies inside the 0-8 mm ring. Computed one by one, a pixel of the innermost band is
visited once per region, and every region pays the fixed cost of each feature formula. Here
the union of the regions is visited once:

- pixels are grouped into *atoms*, the sets of pixels that belong to exactly the same regions
  (tumour, 0-3 mm band, 3-5 mm band, 5-8 mm band);
- with a fixed bin width the grey level of a pixel in region r is its level on the union's bin
  edges minus a constant (whenever the region's edges are a run of the union's edges, which is
  checked exactly), so the union is discretised once;
- co-occurrences, dependences and neighbour sums are counted per atom pair / atom, and each
  region's matrix is the sum over its atoms;
- runs and zones are first found per atom (runs or 8-connected zones of one grey level inside
  one atom); those that touch a same-level run or zone of another atom are joined per region
  (a handful at the atoms' borders), the others are counted per atom once;
- the feature formulas run once for all regions (``engine.glcm_features``,
  ``engine.family_features``).

Each region's features equal those of ``engine``'s one-region functions (tested to 1e-12 on
the parity suite's edge cases, and against pyradiomics). A region this pass cannot share (a
fixed bin count, whose edges depend on each region's range; edges that differ in rounding)
is returned as ``None`` and computed on its own by the caller.
"""
from __future__ import annotations

import numpy as np

from . import engine as E

# Atom x atom x level x level co-occurrence counts above this size (about 400 MB) are not
# shared: the caller computes those regions one by one.
MAX_CELLS = 50_000_000


def _small_int(n: int):
    """The smallest unsigned integer type holding 0..n (neighbour lookups and comparisons on
    small types cost a fraction of int64's)."""
    for t in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(t).max:
            return t
    return np.uint64


def _digitize(x, edges, bin_width):
    """``numpy.digitize(x, edges)`` for edges ``edges[0] + k * bin_width`` (as
    :func:`engine.bin_edges` makes them): a guess from the arithmetic, corrected by comparing
    with the edges themselves, so the result is digitize's (a binary search per pixel costs
    ten times more)."""
    n = len(edges)
    k = np.floor((x - edges[0]) / bin_width).astype(np.int64) + 1
    np.clip(k, 1, n - 1, out=k)
    k -= x < edges[k - 1]                 # guess one too high
    k += (k < n) & (x >= edges[np.minimum(k, n - 1)])     # one too low
    return k


class _Union:
    """The union of the shareable regions: its pixels (row-major), their atoms and levels on
    the union's bin edges, and neighbour lookups."""

    def __init__(self, img, masks, bin_width, dmax, box=None):
        if box is None:
            ys, xs = np.nonzero(np.logical_or.reduce(masks))
            box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        self.img = img[box]
        self.masks = [m[box] for m in masks]
        self.values = [self.img[m] for m in self.masks]     # row-major, as engine reads them
        # the union's edges: bin_edges only reads the minimum and maximum
        lo = min(v.min() for v in self.values)
        hi = max(v.max() for v in self.values)
        self.edges = E.bin_edges(np.array([lo, hi], dtype=self.values[0].dtype), bin_width)
        self.shift, self.ok = [], []
        for e in (E.bin_edges(v, bin_width) for v in self.values):
            k = int(np.searchsorted(self.edges, e[0]))
            # digitize counts the edges <= x: for x in the region, the union's edges below the
            # region's first edge all count and those above its last edge never do, so the
            # region's level is the union's level minus k, exactly, if its edges are a run
            same = k + len(e) <= len(self.edges) and np.array_equal(self.edges[k:k + len(e)], e)
            self.ok.append(bool(same))
            self.shift.append(k)
        R = len(masks)
        code_t = _small_int((1 << R) - 1)
        code = np.zeros(self.img.shape, dtype=code_t)
        for r, m in enumerate(self.masks):
            if self.ok[r]:
                code[m] |= code_t(1 << r)
        flat = code.ravel()
        idx = np.flatnonzero(flat)
        h, w = self.img.shape
        self.ys, self.xs = np.divmod(idx, w)
        cp = flat[idx]
        if R <= 16:                     # small codes: a lookup table instead of a sort
            codes = np.flatnonzero(np.bincount(cp))
            lut = np.zeros(int(codes[-1]) + 1, np.int64)
            lut[codes] = np.arange(codes.size)
            self.at = lut[cp]
        else:
            codes, self.at = np.unique(cp, return_inverse=True)
            self.at = self.at.ravel().astype(np.int64)
        self.A = A = len(codes)
        # member[a, r]: atom a is part of region r; the extra last row is "outside"
        self.member = np.zeros((A + 1, R), dtype=bool)
        for r in range(R):
            self.member[:A, r] = (codes >> r) & 1 == 1
        self.nr = nr = len(self.edges) + 1
        self.raw = _digitize(self.img.ravel()[idx], self.edges, bin_width)
        self.hist = np.bincount(self.at * nr + self.raw, minlength=A * nr).reshape(A, nr)
        # small-type copies for neighbour lookups and comparisons
        self.at_s = self.at.astype(_small_int(A))
        self.raw_s = self.raw.astype(np.int32)
        self.code_t = code_t
        self.code_s = cp                # only shared regions have bits in the code grid
        # neighbour lookups on grids padded by the largest offset, built when first asked
        self.d = d = int(dmax)
        self.width = w + 2 * d
        self.base = (self.ys + d) * self.width + self.xs + d
        self._size = (h + 2 * d) * self.width
        self._grids = {}
        self._nbr = {}

    def grid(self, name):
        if name not in self._grids:
            values, fill = {
                "at": lambda: (self.at_s, self.A), "raw": lambda: (self.raw_s, 0),
                "code": lambda: (self.code_s, 0),
                # co-occurrence key of a pixel as the neighbour (-1 outside)
                "qkey": lambda: (self.at * self.nr * self.nr + self.raw, -1)}[name]()
            g = np.full(self._size, fill, dtype=values.dtype)
            g[self.base] = values
            self._grids[name] = g
        return self._grids[name]

    def nb(self, what, dy, dx):
        """Grid ``what`` (at, raw, code, qkey) at each pixel's neighbour (+dy, +dx)."""
        key = (what, dy, dx)
        if key not in self._nbr:
            self._nbr[key] = self.grid(what)[self.base + (dy * self.width + dx)]
        return self._nbr[key]

    def neighbour(self, dy, dx):
        """(atom, level) of each pixel's neighbour at (+dy, +dx); atom ``A`` = outside."""
        return self.nb("at", dy, dx), self.nb("raw", dy, dx)

    def present_raw(self, r):
        """The union levels present in region r."""
        counts = self.hist[self.member[:-1, r]].sum(0)
        return np.flatnonzero(counts), counts


def texture_many(img: np.ndarray, masks: list, spacing, classes: dict, st: dict,
                 box=None) -> list:
    """Features of each region of ``img`` (``{"<class>_<feature>": value}``), or ``None`` for
    a region this pass does not handle (the caller computes it alone).

    Parameters
    ----------
    img : numpy.ndarray
        The (filtered) 2D image.
    masks : list of numpy.ndarray
        Boolean region masks on ``img``'s grid, each already validated (non-empty).
    spacing : tuple
        (x, y) pixel spacing in mm.
    classes : dict
        Feature class -> feature names (shape2D is ignored: it does not depend on the image).
    st : dict
        The image type's settings (binWidth, distances, symmetricalGLCM, weightingNorm,
        gldm_a, voxelArrayShift).
    box : tuple of slice, optional
        The union's bounding box, when the caller knows it (saves a pass over the image).
    """
    out = [None] * len(masks)
    texture = [c for c in classes if c != "shape2D"]
    if (not texture or len(masks) < 2 or len(masks) > 62 or st.get("binCount") is not None):
        return out
    dist = [int(v) for v in st.get("distances", [1])]
    u = _Union(img, masks, st.get("binWidth", 25), max(dist + [1]), box)
    regions = [r for r in range(len(masks)) if u.ok[r]]
    if len(regions) < 2 or u.A ** 2 * u.nr ** 2 * len(E.angles_2d(dist)) > MAX_CELLS:
        return out
    present = {r: u.present_raw(r) for r in regions}
    levels = [present[r][0] - u.shift[r] for r in regions]   # each region's own levels
    res = {r: {} for r in regions}
    for cls in texture:
        names = classes[cls]
        if cls == "firstorder":
            for r in regions:
                vals = E.firstorder_values(
                    u.values[r].astype(np.float64), present[r][1][present[r][0]],
                    spacing, st.get("voxelArrayShift", 0), names)
                res[r].update({f"firstorder_{k}": v for k, v in vals.items()})
            continue
        if cls == "glcm":
            got = E.glcm_features(_glcm(u, regions, present, spacing, dist, st), levels, names)
        elif cls == "gldm":
            got = E.family_features("gldm", _gldm(u, regions, present, dist,
                                                  st.get("gldm_a", 0)), levels, names=names)
        elif cls == "glrlm":
            Ps, jv = _glrlm(u, regions, present, spacing, st.get("weightingNorm"))
            got = E.family_features("glrlm", Ps, levels, names=names, jvector=jv)
        elif cls == "glszm":
            Ps, jv = _glszm(u, regions, present)
            got = E.family_features("glszm", Ps, levels, names=names, jvector=jv)
        else:
            got = _ngtdm(u, regions, present, dist, names)
        for r, vals in zip(regions, got):
            res[r].update({f"{cls}_{k}": v for k, v in vals.items()})
    for r in regions:
        out[r] = res[r]
    return out


def _glcm(u, regions, present, spacing, dist, st):
    angles = E.angles_2d(dist)
    A, nr = u.A, u.nr
    C = np.empty((A, A, nr, nr, len(angles)))
    # key = ((a_p A + a_q) nr + level_p) nr + level_q = pkey(p) + qkey(q)
    pkey = u.at * (A * nr * nr) + u.raw * nr
    for k, (dy, dx) in enumerate(angles):
        qk = u.nb("qkey", int(dy), int(dx))
        keep = qk >= 0
        key = pkey[keep] + qk[keep]
        C[:, :, :, :, k] = np.bincount(key, minlength=A * A * nr * nr).reshape(A, A, nr, nr)
    Ps = []
    for r in regions:
        sel = u.member[:-1, r]
        P = C[sel][:, sel].sum((0, 1))
        pr = present[r][0]
        Ps.append(E.glcm_normalise(P[np.ix_(pr, pr)], angles, spacing,
                                   st.get("symmetricalGLCM", True), st.get("weightingNorm"),
                                   drop=False))
    return Ps


def _offsets(dist):
    for dy, dx in E.angles_2d(dist):
        for sy, sx in ((dy, dx), (-dy, -dx)):
            yield int(sy), int(sx)


def _gldm(u, regions, present, dist, alpha):
    # w[p]: region bits of a neighbour whose level is similar to p's (0: none; outside the
    # union the level is 0, never similar, as levels start at 1); a region's dependence is
    # 1 + the number of offsets whose w has its bit
    ws = []
    for dy, dx in _offsets(dist):
        rq = u.nb("raw", dy, dx)
        eq = (rq == u.raw_s) if alpha == 0 else (rq > 0) & (np.abs(u.raw_s - rq) <= alpha)
        ws.append(u.nb("code", dy, dx) * eq.astype(u.code_t))
    Ps = []
    for r in regions:
        bit = u.code_t(1 << r)
        dep = np.ones(u.at.size, np.int64 if len(ws) > 250 else np.uint8)
        for w in ws:
            dep += (w & bit) != 0
        inr = u.member[u.at, r]
        lv, dv = u.raw[inr], dep[inr].astype(np.int64)
        pr = present[r][0]
        idx = np.searchsorted(pr, lv)
        nd = int(dv.max())
        Ps.append(np.bincount(idx * nd + dv - 1, minlength=len(pr) * nd)
                  .reshape(len(pr), nd).astype(np.float64)[:, :, None])
    return Ps


def _ngtdm(u, regions, present, dist, names):
    offsets = list(_offsets(dist))
    codes = [u.nb("code", dy, dx) for dy, dx in offsets]
    levels = [u.nb("raw", dy, dx) for dy, dx in offsets]
    out = []
    for r in regions:
        bit = u.code_t(1 << r)
        inr = u.member[u.at, r]
        c = np.zeros(int(inr.sum()), np.int64)
        total = np.zeros(c.size, np.int64)
        for cq, rq in zip(codes, levels):
            # neighbours in the region, and the sum of their levels (integers: exact, so
            # the shift to the region's own levels changes no rounding)
            inq = (cq[inr] & bit) != 0
            c += inq
            total += rq[inr] * inq
        total = (total - u.shift[r] * c).astype(np.float64)
        out.append(E.ngtdm_values(u.raw[inr] - u.shift[r], c, total,
                                  present[r][0] - u.shift[r], names))
    return out


def _pieces_histogram(u, regions, present, atom, level, size, linked, joined):
    """Per region, the (level x size) counts of its runs or zones, and the sizes (columns):
    the pieces of one atom that touch no same-level piece of another atom (``~linked``)
    counted per atom once, plus the region's joined pieces (``joined(r)`` -> (levels,
    sizes)). Only sizes that occur get a column (zones reach thousands of pixels)."""
    A, nr = u.A, u.nr
    free = ~linked
    joined_r = {r: joined(r) for r in regions}
    # the sizes that occur, and each size's column (sizes are at most the union's pixels,
    # so a lookup table beats sorting)
    fs = size[free]
    every = np.concatenate([fs] + [s for _, s in joined_r.values()])
    sizes = np.flatnonzero(np.bincount(every)) if every.size else np.ones(1, np.int64)
    S = sizes.size
    col = np.zeros(int(sizes[-1]) + 1, np.int64)
    col[sizes] = np.arange(S)
    H = np.bincount((atom[free] * nr + level[free]) * S + col[fs],
                    minlength=A * nr * S).reshape(A, nr, S)
    out = []
    for r in regions:
        P = H[u.member[:-1, r]].sum(0)
        lv, sz = joined_r[r]
        if lv.size:
            P = P + np.bincount(lv * S + col[sz], minlength=nr * S).reshape(nr, S)
        out.append(P[present[r][0]].astype(np.float64))
    return out, sizes.astype(np.float64)


def _glrlm(u, regions, present, spacing, weighting_norm):
    angles = E.angles_2d([1])
    ys, xs = u.ys, u.xs
    A = u.A
    per_angle = []
    for dy, dx in angles:
        dy, dx = int(dy), int(dx)
        line = (ys if (dy, dx) == (0, 1) else xs if (dy, dx) == (1, 0)
                else xs - ys if (dy, dx) == (1, 1) else xs + ys)
        pos = xs if (dy, dx) == (0, 1) else ys
        line = line - line.min()
        nl = int(line.max()) + 1
        # regions one pixel thick across every line of this direction: angle dropped
        lines = np.bincount(u.at * nl + line, minlength=A * nl).reshape(A, nl)
        thin = {r: int(lines[u.member[:-1, r]].sum(0).max()) < 2 for r in regions}
        # atoms compared by their region bits (the grids GLDM already looked up)
        ap, rp = u.nb("code", -dy, -dx), u.nb("raw", -dy, -dx)
        an, rn = u.nb("code", dy, dx), u.nb("raw", dy, dx)
        lev_p, lev_n = rp == u.raw_s, rn == u.raw_s
        at_p, at_n = ap == u.code_s, an == u.code_s
        same_p, same_n = at_p & lev_p, at_n & lev_n
        # a piece (run inside one atom) continues a same-level piece of another atom (the
        # level test excludes "outside": its level is 0)
        link_p = lev_p & ~at_p
        link_n = lev_n & ~at_n
        s_idx, e_idx = np.flatnonzero(~same_p), np.flatnonzero(~same_n)
        if (dy, dx) != (0, 1):           # pieces in line order: stable sort by line index
            # int16 keys when they fit: numpy's stable sort is then a radix sort
            key = line.astype(np.int16 if nl < 2 ** 15 else np.int64)
            s_idx = s_idx[np.argsort(key[s_idx], kind="stable")]
            e_idx = e_idx[np.argsort(key[e_idx], kind="stable")]
        atom, level = u.at[s_idx], u.raw[s_idx]
        size = pos[e_idx] - pos[s_idx] + 1
        lp, ln = link_p[s_idx], link_n[e_idx]
        linked = lp | ln
        inv = np.flatnonzero(linked)

        def joined(r, atom=atom, level=level, size=size, lp=lp, inv=inv):
            # a piece linked to its predecessor follows it directly in line order (the
            # predecessor pixel ends the previous piece), so chains are consecutive in inv
            inr = u.member[atom[inv], r]
            prev_in = np.zeros(inv.size, bool)
            prev_in[1:] = inr[:-1]
            cont = lp[inv] & prev_in
            keep = inv[inr]
            starts = ~cont[inr]
            if keep.size == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            first = np.flatnonzero(starts)
            return level[keep[first]], np.add.reduceat(size[keep], first)

        P, sizes = _pieces_histogram(u, regions, present, atom, level, size, linked, joined)
        per_angle.append(({r: (np.zeros_like(p) if thin[r] else p)
                           for r, p in zip(regions, P)}, sizes))
    jvector = np.unique(np.concatenate([s for _, s in per_angle]))
    Ps = []
    for r in regions:
        P = np.zeros((len(present[r][0]), jvector.size, len(angles)))
        for k, (p, sizes) in enumerate(per_angle):
            P[:, np.searchsorted(jvector, sizes), k] = p[r]
        Ps.append(E.glrlm_normalise(P, angles, spacing, weighting_norm))
    return Ps, jvector


def _glszm(u, regions, present):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.measure import label
    A = u.A
    # pieces: 8-connected pixels of one level inside one atom, labelled in one pass
    grid = np.zeros(u.img.shape, dtype=np.int64)
    grid[u.ys, u.xs] = u.raw * A + u.at + 1
    lab = label(grid, background=0, connectivity=2)
    lp = lab[u.ys, u.xs]
    size = np.bincount(lp)[1:]
    n = size.size
    atom = np.zeros(n + 1, np.int64)
    level = np.zeros(n + 1, np.int64)
    atom[lp], level[lp] = u.at, u.raw
    atom, level = atom[1:], level[1:]
    # same-level pieces of different atoms that touch (8-neighbourhood) join in a region
    # holding both atoms
    d = u.d
    lab_grid = np.zeros((u.img.shape[0] + 2 * d) * u.width, dtype=np.int64)
    lab_grid[u.base] = lp
    src, dst = [], []
    for dy, dx in E.angles_2d([1]):
        cq, rq = u.nb("code", int(dy), int(dx)), u.nb("raw", int(dy), int(dx))
        link = (rq == u.raw_s) & (cq != u.code_s)
        if link.any():
            src.append(lp[link] - 1)
            dst.append(lab_grid[u.base[link] + int(dy) * u.width + int(dx)] - 1)
    src = np.concatenate(src) if src else np.zeros(0, np.int64)
    dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    linked = np.zeros(n, bool)
    linked[src], linked[dst] = True, True
    inv = np.flatnonzero(linked)
    pos = np.full(n, -1, np.int64)
    pos[inv] = np.arange(inv.size)

    def joined(r):
        inr = u.member[atom[inv], r]
        keep = inr[pos[src]] & inr[pos[dst]]
        nodes = inv[inr]
        if nodes.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        sub = np.full(inv.size, -1, np.int64)
        sub[np.flatnonzero(inr)] = np.arange(nodes.size)
        g = coo_matrix((np.ones(int(keep.sum())), (sub[pos[src[keep]]], sub[pos[dst[keep]]])),
                       shape=(nodes.size, nodes.size))
        k, zone = connected_components(g, directed=False)
        sizes = np.bincount(zone, weights=size[nodes], minlength=k).astype(np.int64)
        lv = np.zeros(k, np.int64)
        lv[zone] = level[nodes]
        return lv, sizes

    Ps, sizes = _pieces_histogram(u, regions, present, atom, level, size, linked, joined)
    return [P[:, :, None] for P in Ps], sizes
