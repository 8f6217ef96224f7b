"""``her2radiomics demo``: the main job on the built-in synthetic cohort, stage by stage.

1. generate the synthetic cohort (3 sites, multi-reader subset, clinical variables, HER2
   zero/low/positive) unless present;
2. auto-segment every image with the shipped CNN and report Dice against the ground truth;
3. build 3/5/8 mm rings and extract features in parallel;
4. reader study on the multi-reader subset (ICC, Dice/HD95, stable features);
5. train and evaluate the yin2024 and peritumoral2025 recipes with site C held out;
6. save the bundle and predict an unseen patient from its image alone (CNN mask -> rings ->
   features -> bundle), as the Slicer panel does;
7. write ``demo-output/report.html`` (self-contained, every figure embedded) and, when Chromium
   is installed, ``report.pdf``; the time per stage is printed at the end.

Every stage caches its outputs, keyed on the settings that made them (``demo_cache.json``:
``--n``, ``--seed``, the feature params and rings, ``--repeats`` for the models, the library
version, the CNN model file): a rerun with the same settings skips finished stages, a rerun
with other settings into the same ``--out`` recomputes the stages they change; the unseen
patient's card and, when nothing was recomputed, the report are reused too.

To fit its first minute on two cores the demo runs some settings differently from the
recipes (:func:`reductions`: the original-image feature set of the ``cui2023`` params, 3
repeated splits instead of peritumoral2025's 10, site C held out in both recipes) and says so
in its console output and its report; ``her2radiomics train`` uses the recipes' own settings.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .errors import InputError

# Command functions import the library modules (and numpy, pandas, SimpleITK, matplotlib)
# when they run: the parser imports this module, and `her2radiomics --help` must stay instant
# (Testing/test_outputs_atomic.py checks what building the parser loads).

DEMO_PARAMS = "cui2023"
DEMO_RINGS_MM = (3.0, 5.0, 8.0)
DEMO_RECIPES = ("yin2024", "peritumoral2025")
CACHE_FILE = "demo_cache.json"
#: the fewest patients the demo accepts. Its recipes need 5 patients of each class in the
#: training sites (``study.MIN_PATIENTS_PER_CLASS``); the generator labels 30 % HER2-zero and
#: puts 20 % of patients in site C (held out), so 40 patients give 9.7 HER2-zero training
#: patients on average, and fewer than 5 for 2 % of seeds (binomial; 11 % at 30 patients).
#: Such a seed ends in train's one-line "too few patients" error
DEMO_MIN_PATIENTS = 40
#: repeated random splits of the demo's models (``--repeats``): fewer than peritumoral2025's
#: own 10, to fit the first minute; each costs ~4 pipeline fits per scenario. Stated with the
#: demo's other reductions (:func:`reductions`) in its console output and its report
DEFAULT_REPEATS = 3
#: the recipe whose repeated splits the demo shortens (yin2024 tests on site C: none there)
REPEATS_RECIPE = "peritumoral2025"
#: the shipped recipes (= modelling.recipes.RECIPES_DIR, named here without importing it)
RECIPE_FILES = Path(__file__).resolve().parent / "recipes"


def reductions(repeats: int) -> list:
    """What the demo runs differently from the recipes' own defaults (a real ``train`` uses
    the recipe's), one ``{"setting", "demo", "real runs"}`` row each: the console output and
    the report list them. The recipes' files are not changed (Testing/test_demo_settings.py).
    """
    import yaml
    # the shipped files themselves (what `train` reads), without importing the modelling
    # layer (scikit-learn: ~2 s of a cached rerun)
    rec = {n: yaml.safe_load((RECIPE_FILES / f"{n}.yaml").read_text(encoding="utf-8"))
           for n in DEMO_RECIPES}
    rows = []
    presets = {n: r.get("params", "default") for n, r in rec.items()}
    rows.append({"setting": "feature params",
                 "demo": f"{DEMO_PARAMS} (original image only)",
                 "real runs": ", ".join(f"{n}: {p}" for n, p in presets.items())})
    ev = rec[REPEATS_RECIPE].get("evaluation") or {}
    # 20: the default of a recipe without evaluation.repeats (modelling.study.run)
    rows.append({"setting": f"repeated random splits ({REPEATS_RECIPE})", "demo": str(repeats),
                 "real runs": str(ev.get("repeats", 20))})
    ext = {n: (r.get("evaluation") or {}).get("external_site") for n, r in rec.items()}
    rows.append({"setting": "external site held out", "demo": "C (both recipes)",
                 "real runs": ", ".join(f"{n}: {e or 'none (random 7:3 split)'}"
                                        for n, e in ext.items())})
    return rows


def _stage(times, name):
    """Time a stage; the body sets ``st.cached = True`` when it reused earlier outputs."""
    class _T:
        cached = False

        def __enter__(self):
            self.t = time.time()
            print(f"[demo] {name} ...", flush=True)
            return self

        def __exit__(self, *exc):
            times[name] = {"seconds": round(time.time() - self.t, 1), "cached": self.cached}
            if exc[0] is None:
                print(f"[demo] {name}: {times[name]['seconds']} s"
                      + (" (cached)" if self.cached else ""), flush=True)
    return _T()


def _merge_timings(path: Path, times: dict) -> dict:
    """This run's stage times plus, per stage, the time of the last run that computed it."""
    old = {}
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("computed", {})
        except (ValueError, AttributeError):
            old = {}
    computed = {k: (old.get(k) if v["cached"] and k in old else v["seconds"])
                for k, v in times.items()}
    return {"this_run": {k: v["seconds"] for k, v in times.items()},
            "cached": [k for k, v in times.items() if v["cached"]], "computed": computed}


class _Cache:
    """Which settings made each stage's outputs (``demo_cache.json`` in the output folder).

    A stage is reused only when its outputs exist and were made with this run's settings;
    before a stage recomputes, its record is removed, so an interrupted run never leaves
    outputs that claim other settings. ``resumable`` says whether an earlier run with the
    same settings started the stage (its per-case parts can then be reused).
    """

    def __init__(self, out: Path, keys: dict):
        self.path, self.keys = out / CACHE_FILE, keys
        try:
            doc = json.loads(self.path.read_text())
            self.done, self.started = dict(doc["done"]), dict(doc["started"])
        except (OSError, ValueError, KeyError, TypeError):
            self.done, self.started = {}, {}     # none, or unreadable: recompute everything

    def valid(self, stage: str, *paths) -> bool:
        return self.done.get(stage) == self.keys[stage] and all(Path(p).exists() for p in paths)

    def resumable(self, stage: str) -> bool:
        return self.started.get(stage) == self.keys[stage]

    def start(self, stage: str):
        self.done.pop(stage, None)
        self.started[stage] = self.keys[stage]
        self._save()

    def finish(self, stage: str):
        self.done[stage] = self.keys[stage]
        self._save()

    def _save(self):
        from .imaging.io import atomic_write_text
        atomic_write_text(self.path, json.dumps({"done": self.done, "started": self.started},
                                                indent=2, sort_keys=True))


def _stage_keys(n: int, seed: int, repeats: int) -> dict:
    """The settings each stage's outputs depend on (earlier stages' included)."""
    from . import __version__
    from .segmentation.inference import DEFAULT_MODEL
    cnn = None
    if DEFAULT_MODEL.exists():
        st = DEFAULT_MODEL.stat()
        cnn = [st.st_size, st.st_mtime_ns]
    cohort = {"n": n, "seed": seed, "version": __version__}
    feats = {**cohort, "params": DEMO_PARAMS, "rings_mm": list(DEMO_RINGS_MM)}
    keys = {"cohort": cohort, "cnn": {**cohort, "cnn": cnn}, "features": feats,
            "readers": feats}
    for name in DEMO_RECIPES:
        keys[f"model:{name}"] = {**feats, "repeats": repeats}
    keys["new_patient"] = {"seed": seed, "version": __version__}
    # the unseen patient's prediction: its image and the bundle that predicts it
    keys["prediction"] = {**keys[f"model:{REPEATS_RECIPE}"], "new_patient": keys["new_patient"],
                          "cnn": cnn}
    return keys


def _demo_settings(a):
    """``(n, repeats)`` checked: ``--repeats 0`` means no repeated splits (not the default)."""
    n = getattr(a, "n", None)
    n = 120 if n is None else int(n)
    if n < DEMO_MIN_PATIENTS:
        raise InputError(f"--n {n}: the demo needs at least {DEMO_MIN_PATIENTS} patients (its "
                         "recipes need 5 patients of each HER2 class in the training sites, "
                         "and a smaller synthetic cohort often has fewer)")
    repeats = getattr(a, "repeats", None)
    repeats = DEFAULT_REPEATS if repeats is None else int(repeats)
    if repeats < 0:
        raise InputError(f"--repeats {repeats}: must be 0 or more")
    return n, repeats


def run_demo(a) -> int:
    # the stages import what they compute with only when they compute (a cached rerun skips
    # scikit-learn, the generator and the extraction engine)
    from .imaging.io import atomic_write_text
    n, repeats = _demo_settings(a)
    final = Path(a.out)
    # the stages work (and cache) in a folder of their own; the finished run's files are then
    # put in place as one set, so an interrupted or failed rerun with other settings never
    # leaves a new cohort under an old report
    from .outputs import check_folder_owner, claim_folder
    check_folder_owner(final, "demo")       # the folder is the demo's, or new (one line)
    claim_folder(final, "demo")
    out = final / WORK_DIR
    out.mkdir(parents=True, exist_ok=True)
    cache = _Cache(out, _stage_keys(n, a.seed, repeats))
    times = {}
    reduced = reductions(repeats)
    print("[demo] settings reduced or changed for the demo's time budget (real runs use the "
          "recipe's own):", flush=True)
    for row in reduced:
        print(f"[demo]   {row['setting']}: {row['demo']} (real runs: {row['real runs']})",
              flush=True)
    cohort = out / "cohort"
    with _stage(times, "1 synthetic cohort") as st:
        st.cached = cache.valid("cohort", cohort / "cohort.csv", cohort / "readers.csv")
        if not st.cached:
            from .imaging.synth import generate_cohort
            cache.start("cohort")
            generate_cohort(cohort, n_cases=n, seed=a.seed, jobs=a.jobs)
            cache.finish("cohort")

    def rows():
        from .extraction.batch import read_manifest
        return read_manifest(cohort / "cohort.csv")

    seg_summary = None
    with _stage(times, "2 CNN auto-mask") as st:
        st.cached = cache.valid("cnn", out / "segmentation_metrics.csv")
        if not st.cached:
            cache.start("cnn")
        seg_summary = _segment_all(None if st.cached else rows(), out, a.jobs,
                                   cached=st.cached)
        if not st.cached:
            cache.finish("cnn")

    with _stage(times, "3 rings + features") as st:
        st.cached = cache.valid("features", out / "features.csv")
        if not st.cached:
            # per-case parts of an earlier run are reused only if it had these settings
            from .extraction.batch import ExtractConfig, run_batch, summarize
            resume = cache.resumable("features")
            cache.start("features")
            cfg = ExtractConfig(params=DEMO_PARAMS, rings_mm=DEMO_RINGS_MM, annuli=False)
            res = run_batch(rows(), out / "features.csv", cfg, jobs=a.jobs, resume=resume,
                            progress=not getattr(a, "no_progress", False))
            print(summarize(res))
            cache.finish("features")

    rs_doc = None
    with _stage(times, "4 reader study") as st:
        summary = out / "reader_study" / "summary.json"
        st.cached = cache.valid("readers", summary, out / "reader_study" / "icc.csv")
        if not st.cached:
            from .readers.study import ReaderStudyConfig, run_reader_study
            from .reports.reader_study import render_reader_study
            resume = cache.resumable("readers")
            cache.start("readers")
            rs_doc = run_reader_study(cohort / "readers.csv", out / "reader_study",
                                      ReaderStudyConfig(params=DEMO_PARAMS, rings="3,5,8"),
                                      jobs=a.jobs, resume=resume, progress=False,
                                      render=render_reader_study)
            cache.finish("readers")
        else:
            rs_doc = json.loads(summary.read_text())

    runs = {}
    with _stage(times, "5 models (" + ", ".join(DEMO_RECIPES) + ")") as st:
        st.cached = all(cache.valid(f"model:{m}", out / "models" / m / "metrics.json")
                        for m in DEMO_RECIPES)
        for name in DEMO_RECIPES:
            mpath = out / "models" / name / "metrics.json"
            if cache.valid(f"model:{name}", mpath):
                runs[name] = json.loads(mpath.read_text())
                continue
            from .modelling.recipes import load_recipe
            from .modelling.study import StudyOptions, run
            from .reports.study import render_study
            cache.start(f"model:{name}")
            r = load_recipe(name)
            own = r.get("params", "default")
            r["params"] = DEMO_PARAMS
            # the results are the recipe's protocol on other features: say so wherever shown
            r["title"] = f"{r['title']} — on original-image features"
            r["features_note"] = (f"recipe {name} on original-image features ({DEMO_PARAMS} "
                                  f"params), not its own '{own}' preset: the demo's time "
                                  "budget")
            # site C held out in both recipes: a demo choice (peritumoral2025's own split is a
            # random 7:3 one), so the report shows external validation
            r["evaluation"] = {**r["evaluation"], "repeats": repeats, "external_site": "C"}
            runs[name] = render_study(run(
                r, out / "features.csv", cohort / "cohort.csv", out / "models" / name,
                StudyOptions(icc=out / "reader_study" / "icc.csv", jobs=a.jobs, progress=True)))
            cache.finish(f"model:{name}")

    with _stage(times, "6 predict an unseen patient") as st:
        card_file = out / "new_patient" / "prediction.json"
        st.cached = cache.valid("prediction", card_file, out / "new_patient" / "overlay.png")
        if st.cached:
            # same patient, same bundle: the card as predicted (no CNN or model load again)
            card = json.loads(card_file.read_text())
            print(f"[demo] unseen patient {card['case_id']}: predicted "
                  f"{card['predicted_class']} (P = {max(card['probabilities'].values()):.2f}); "
                  f"generator label {card['true_label']}")
        else:
            cache.start("prediction")
            fresh = not cache.valid("new_patient", out / "new_patient" / "cohort.csv")
            if fresh:
                cache.start("new_patient")
            card = _predict_new_case(out, a.seed, fresh=fresh)
            if fresh:
                cache.finish("new_patient")
            cache.finish("prediction")

    settings = {"patients": n, "seed": a.seed, "jobs": a.jobs, "feature params": DEMO_PARAMS,
                "rings (mm)": "3, 5, 8 (expansions)", "recipes": ", ".join(runs),
                "repeated splits": repeats, "bootstrap resamples": "2000 (the recipes')",
                "external site": "C",
                "CNN model": "HER2RadiomicsLib/models/busbra_unet.pt",
                "output": str(final.resolve())}
    pdf = not getattr(a, "no_pdf", False)
    with _stage(times, "7 report (HTML + PDF)") as st:
        # nothing recomputed and the same settings: the report (and PDF) of the run that made
        # it still describes these outputs, stage times included (rendering and Chromium were
        # ~4 s of every rerun); timings.json records this run's times
        cache.keys["report"] = {"stages": {k: v for k, v in cache.keys.items()
                                           if k != "report"},
                                "settings": settings, "reductions": reduced, "pdf": pdf}
        st.cached = all(v["cached"] for v in times.values()) and cache.valid(
            "report", out / "report.html", *([out / "report.pdf"] if pdf else []))
        if st.cached:
            rep = {"html": out / "report.html", "pdf": out / "report.pdf" if pdf else None,
                   "pdf_error": None}
        else:
            from .reports.demo import write_demo_report
            cache.start("report")
            if not pdf:     # an earlier run's PDF would be published beside this report
                (out / "report.pdf").unlink(missing_ok=True)
            rep = write_demo_report(out, _merge_timings(out / "timings.json", times),
                                    seg_summary, rs_doc, runs, card, settings, pdf=pdf,
                                    reductions=reduced)
            if rep["pdf"] or not pdf:
                cache.finish("report")
    timings = _merge_timings(out / "timings.json", times)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2))
    from .outputs import staged_dir
    with staged_dir(final, "demo") as stage:
        _publish(out, stage)
    print("\nstage times (s): " + ", ".join(
        f"{k} {v['seconds']}" + (" cached" if v["cached"] else "") for k, v in times.items())
          + f"; total {sum(timings['this_run'].values()):.1f}")
    print(f"report: {final / Path(rep['html']).name}")
    if rep["pdf"]:
        print(f"pdf:    {final / Path(rep['pdf']).name}")
    elif rep["pdf_error"]:
        print(f"no PDF: {rep['pdf_error']}")
    return 0


#: where the stages work and keep their caches, inside the demo's output folder
WORK_DIR = ".work"


def _publish(work: Path, stage: Path) -> None:
    """This run's files (not its caches) into ``stage``, as hard links where the file system
    allows (no copy of the images), else copies."""
    for src in work.rglob("*"):
        rel = src.relative_to(work)
        if src.is_dir() or rel.name == CACHE_FILE or any(
                part.endswith(".parts") or part.startswith(".") for part in rel.parts):
            continue
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def _segment_all(rows, out: Path, jobs: int, cached: bool = False):
    """CNN masks for every image and Dice against the generator's ground truth; ``cached``:
    read the metrics of an earlier run with the same settings instead."""
    import numpy as np
    import pandas as pd
    from .imaging.io import atomic_write_text
    from .segmentation.inference import DEFAULT_MODEL
    metrics = out / "segmentation_metrics.csv"
    if cached and metrics.exists():
        df = pd.read_csv(metrics)
    else:
        if not DEFAULT_MODEL.exists():
            print(f"[demo] no shipped CNN model at {DEFAULT_MODEL}; skipping auto-masks")
            return None
        (out / "cnn_masks").mkdir(exist_ok=True)
        if jobs > 1 and len(rows) > 1:
            # one single-threaded CNN per process, each on every jobs-th image: on a shared
            # machine torch's two threads in one process wait for each other whenever another
            # program holds a core (the stage took 190 s instead of 18 s at load 5)
            from joblib import Parallel, delayed
            parts = Parallel(n_jobs=jobs)(delayed(_segment_rows)(rows[i::jobs], out, 1)
                                          for i in range(jobs))
            order = {r["case_id"]: i for i, r in enumerate(rows)}
            recs = sorted((x for part in parts for x in part), key=lambda x: order[x["case_id"]])
        else:
            recs = _segment_rows(rows, out)
        df = pd.DataFrame(recs)
        atomic_write_text(metrics, df.to_csv(index=False, float_format="%.4f"))
    s = {"n": len(df), "mean_dice": float(df.dice.mean()), "median_dice": float(df.dice.median()),
         "median_hd95_mm": float(np.nanmedian(df.hd95_mm)),
         "miss_rate": float((df.dice < 0.1).mean())}
    print(f"[demo] CNN vs ground truth: mean Dice {s['mean_dice']:.3f}, median "
          f"{s['median_dice']:.3f}, misses {100 * s['miss_rate']:.1f}%")
    return s


def _segment_rows(rows, out: Path, threads: int | None = None) -> list:
    """CNN mask of each row into ``out/cnn_masks`` and its Dice / HD95 against the
    generator's mask; ``threads`` caps torch's threads in this process."""
    import SimpleITK as sitk
    from .imaging.io import load_case
    from .readers.metrics import compare_masks
    from .segmentation.inference import get_segmenter
    seg = get_segmenter(None, "cpu", threads)
    recs = []
    for r in rows:
        loaded, truth = load_case(r["image"], r["mask"])
        res = seg.predict(loaded.image)
        sitk.WriteImage(res.mask, str(out / "cnn_masks" / f"{r['case_id']}.nrrd"), True)
        m = compare_masks(sitk.GetArrayFromImage(truth) > 0,
                          sitk.GetArrayFromImage(res.mask) > 0, loaded.spacing_mm)
        recs.append({"case_id": r["case_id"], "site": r.get("site"), "dice": m["dice"],
                     "hd95_mm": m["hd95"]})
    return recs


def _predict_new_case(out: Path, seed: int, fresh: bool = True):
    """An unseen synthetic patient: CNN mask -> bundle prediction (what the panel does);
    the patient is generated again when ``fresh`` (another seed than the cached one)."""
    import pandas as pd
    from .modelling.bundle import load_bundle
    from .imaging.io import atomic_write_text, write_image
    from .reports.case import overlay_figure
    from .modelling.predict import predict_case
    from .imaging.synth import generate_cohort
    new = out / "new_patient"
    if fresh or not (new / "cohort.csv").exists():
        generate_cohort(new, n_cases=1, seed=seed + 1000, reader_fraction=0,
                        second_view_fraction=0)
    row = pd.read_csv(new / "cohort.csv").iloc[0]
    image = new / row.image
    mask = new / row["mask"]
    from .segmentation.inference import DEFAULT_MODEL
    if DEFAULT_MODEL.exists():
        from .imaging.io import read_image
        from .segmentation.inference import auto_mask
        loaded = read_image(image)
        try:
            res = auto_mask(loaded)
        except InputError:        # no lesion found: the generator's mask stands in
            res = None
        if res is not None:
            mask = new / "cnn_mask.nrrd"
            write_image(res.mask, mask)
    recipe = "peritumoral2025"
    bundle = load_bundle(out / "models" / recipe / "model_bundle.zip")
    clinical = {k: float(row[k]) for k in bundle.meta["clinical"]}
    result = predict_case(bundle, image, mask, site=row.site, clinical=clinical,
                          case_id=str(row.case_id))
    pr = result.prediction
    pr.qc = {"mask_source": "CNN auto-mask (not reviewed)" if mask.name == "cnn_mask.nrrd"
             else "generator ground truth", **pr.qc}
    fig = overlay_figure(result.loaded.image, {r: result.regions.masks[r]
                                               for r in bundle.meta["regions"]})
    fig.savefig(new / "overlay.png", dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    card = {**pr.__dict__, "true_label": row.her2, "mask": str(mask), "bundle_recipe": recipe}
    atomic_write_text(new / "prediction.json", json.dumps(card, indent=2, default=str))
    print(f"[demo] unseen patient {pr.case_id}: predicted {pr.predicted_class} "
          f"(P = {max(pr.probabilities.values()):.2f}); generator label {row.her2}")
    return card
