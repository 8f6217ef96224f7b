"""Command-line options of feature extraction, shared by ``extract`` and ``pacs run`` (one
definition, so both spell and check every setting the same way)."""
from __future__ import annotations

# ExtractConfig and parse_rings are imported when a config is built: building the parser must
# stay instant (`her2radiomics --help`; Testing/test_outputs_atomic.py checks the imports)


def add_extract_options(p) -> None:
    """The feature-extraction options of ``extract`` (and of ``pacs run``) on parser ``p``."""
    p.add_argument("--params", default="default",
                   help="params preset name (default, cui2023, yin2024, zhao2025) or a "
                        "pyradiomics params YAML file (default: %(default)s)")
    p.add_argument("--rings", default="", help="peritumoral distances in mm, e.g. 3,5,8")
    p.add_argument("--no-annuli", action="store_true",
                   help="only expansions 0-d, no annuli between consecutive distances")
    p.add_argument("--combined", default="",
                   help="distances d for tumour+ring regions 'tumor+peri_<d>mm' ('all' or 5,8)")
    p.add_argument("--fov", choices=("auto", "none"), default="auto",
                   help="clip rings to the detected ultrasound field of view (auto) or only to "
                        "the image border (none)")
    p.add_argument("--max-clip-fraction", type=float, default=0.5,
                   help="flag a ring that loses more than this share to clipping (default 0.5)")
    p.add_argument("--pixel-units", action="store_true",
                   help="allow mm-based settings on images of unknown spacing (1 px = 1 mm)")
    p.add_argument("--label", type=int, help="mask label value (default: any non-zero pixel)")
    p.add_argument("--min-mask-pixels", type=int, default=16,
                   help="smallest accepted lesion in pixels (default 16)")
    p.add_argument("--frame", type=int, help="frame of a multi-frame/cine image")
    p.add_argument("--engine", choices=("native", "pyradiomics"), default="native",
                   help="feature engine: native (default; ours, no compiled code) or "
                        "pyradiomics (the optional reference engine, same values; install "
                        "HER2RadiomicsLib[pyradiomics]); native covers every shipped preset, "
                        "not resegmentation, LBP3D or voxel-based settings")


def extract_config(a):
    """The :class:`~.batch.ExtractConfig` of parsed :func:`add_extract_options` arguments."""
    from ..imaging.rings import parse_rings
    from .batch import ExtractConfig
    combined = a.combined
    return ExtractConfig(
        params=a.params, rings_mm=tuple(parse_rings(a.rings)), annuli=not a.no_annuli,
        combined="all" if combined == "all" else tuple(parse_rings(combined)),
        fov=a.fov, max_clip_fraction=a.max_clip_fraction, pixel_units=a.pixel_units,
        min_mask_pixels=a.min_mask_pixels, label=a.label, engine=a.engine)
