"""``her2radiomics station``: create a reader study and serve it in the browser.

``station create`` writes the study (queues, token hashes, and for a CNN start the CNN's
proposal of every case, made once for all readers) and prints each token once.
``station serve`` starts one web process per reader and one for the coordinator on consecutive
ports (the coordinator on ``--port``, reader *i* on ``--port + i``) and prints their addresses.
``station demo`` does both on a small synthetic cohort. With ``station create --dicomweb URL
--study-uid UID ...`` the cases are an archive's ultrasound images, and ``station serve`` stores
each saved contour back there as a DICOM SEG (``station push`` does it on demand); see
:mod:`.archive`.

The launcher only starts and watches processes: every request is answered by a process that
serves a single reader (or the coordinator) and admits only that sign-in (see :mod:`.gate`). A
process that dies is started again on its port after a back-off (1, 2, 4 ... 30 s); the others
keep serving, and the reader's page reconnects by itself.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import HER2Error, InputError

# Command functions import the library modules (and SimpleITK, trame, and standard modules
# the parser does not load, such as socket) when they run: the parser imports this module,
# and `her2radiomics --help` must stay instant (Testing/test_outputs_atomic.py checks what
# building the parser loads).

#: seconds a station process may take to load Slicer's core and open its first case
START_TIMEOUT_S = 120.0
#: waits before restarting a process that died (s), one step longer per crash in a row; a
#: process that served this long before dying starts the sequence again
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_S = 60.0


def register(sub):
    p = sub.add_parser("station", help="browser reader station (contour, reader study)")
    ss = p.add_subparsers(dest="station_cmd", metavar="ACTION", required=True)

    c = ss.add_parser("create", help="create a reader study from a cohort manifest or from "
                                     "studies on a DICOMweb archive")
    c.add_argument("--study", required=True, help="study folder to create")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="CSV with case_id,image (labels ignored)")
    src.add_argument("--dicomweb", metavar="URL",
                     help="DICOMweb root of the archive (e.g. https://pacs/dicom-web): the "
                          "cases are the single-frame ultrasound images of --study-uid / "
                          "--patient-id, and the readers' contours are stored back as DICOM SEG")
    c.add_argument("--study-uid", nargs="+", default=[], metavar="UID",
                   help="Study Instance UID(s) on the archive (with --dicomweb)")
    c.add_argument("--patient-id", help="take every study of this patient that holds an "
                                        "ultrasound image (with --dicomweb)")
    _archive_options(c)
    c.add_argument("--readers", required=True, help="comma-separated reader names")
    c.add_argument("--start", default="cnn", choices=("cnn", "empty"),
                   help="starting contour: the CNN's proposal or empty (default cnn)")
    c.add_argument("--seed", type=int, help="queue shuffle seed (default: random, recorded)")
    c.add_argument("--tokens-out", help="also write the tokens to this JSON file (mode 600)")
    c.set_defaults(func=cmd_create)

    s = ss.add_parser("serve", help="serve a study: one port per reader + the coordinator")
    s.add_argument("--study", required=True)
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this computer only)")
    s.add_argument("--port", type=int, default=8080,
                   help="coordinator port; reader i gets port + i (default 8080)")
    s.add_argument("--bundle", help="model bundle: a prediction card for the current contour")
    s.add_argument("--tokens", help="tokens JSON from `station create --tokens-out`, to print "
                                    "ready-to-open addresses")
    s.add_argument("--min-icc-cases", type=int, default=3,
                   help="cases with two readers' contours below which the coordinator's "
                        "reader study is refused (default 3)")
    s.add_argument("--warn-icc-cases", type=int, default=10,
                   help="below this many such cases the reader study warns (default 10)")
    _archive_options(s)
    s.set_defaults(func=cmd_serve)

    u = ss.add_parser("push", help="store the readers' DICOM SEGs the archive lacks, now")
    u.add_argument("--study", required=True)
    _archive_options(u)
    u.set_defaults(func=cmd_push)

    d = ss.add_parser("demo", help="a station on a small synthetic cohort (2 readers)")
    d.add_argument("--out-dir", default="station-demo",
                   help="folder for the cohort and the study (reused when it holds one)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--cases", type=int, default=6, help="synthetic patients (default 6)")
    d.add_argument("--manifest", help="take the cases from this manifest instead, e.g. "
                                      "demo-output/cohort/cohort.csv after `make demo`")
    d.add_argument("--bundle", help="model bundle for the readers' prediction card")
    d.set_defaults(func=cmd_demo)

    o = ss.add_parser("one", help="one station process (what serve starts for each role)")
    o.add_argument("--study", required=True)
    o.add_argument("--role", choices=("reader", "coordinator"), required=True)
    o.add_argument("--reader")
    o.add_argument("--host", default="127.0.0.1")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--bundle")
    o.add_argument("--ready-file")
    o.add_argument("--min-icc-cases", type=int, default=3)
    o.add_argument("--warn-icc-cases", type=int, default=10)
    o.set_defaults(func=cmd_one)


def _archive_options(p):
    p.add_argument("--auth-file", help="archive credentials: a file holding 'bearer <token>' or "
                                       "'basic <user>:<password>' (default: the environment's "
                                       "HER2RADIOMICS_PACS_TOKEN or _USER/_PASSWORD)")
    p.add_argument("--ca-bundle", help="CA certificate to verify the archive's TLS with")


def _need_station():
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        raise InputError("the browser station needs trame-slicer: "
                         "pip install 'HER2RadiomicsLib[station]'") from None


def make_proposals(store, progress=True) -> int:
    """The CNN's proposal of every case that lacks one (a study that starts from the CNN):
    made once, for every reader, so that no reader's process loads the CNN (about 300 MB
    each) and every next case opens at once. Returns how many were made."""
    todo = store.missing_proposals()
    if not todo:
        return 0
    import SimpleITK as sitk
    from ..extraction.batch import progress_bar
    from ..segmentation.inference import get_segmenter
    seg = get_segmenter()
    bar = progress_bar(total=len(todo), desc="CNN proposals", unit="case", file=sys.stderr,
                       disable=not progress)
    for case in todo:
        loaded = store.load_image(case)
        try:
            mask = seg.predict(loaded.image).mask
        except HER2Error as exc:       # the reader starts empty on this case, and is told
            print(f"  {case}: no CNN proposal ({exc})", file=sys.stderr)
            mask = sitk.Image(loaded.image.GetSize(), sitk.sitkUInt8)
            mask.CopyInformation(loaded.image)
        store.save_proposal(case, mask)
        bar.update()
    bar.close()
    return len(todo)


def cmd_create(a) -> int:
    from .store import StudyStore
    readers = [r.strip() for r in str(a.readers).split(",") if r.strip()]
    manifest, archive = a.manifest, None
    if a.dicomweb:
        StudyStore.check_readers(readers)          # before anything is downloaded
        manifest, archive = _from_archive(a)
    elif a.study_uid or a.patient_id:
        raise InputError("--study-uid and --patient-id name studies on an archive: give "
                         "--dicomweb URL too")
    store, tokens = StudyStore.create(a.study, manifest, readers, start=a.start, seed=a.seed,
                                      archive=archive)
    if a.tokens_out:
        _write_private(a.tokens_out, tokens)
    make_proposals(store)
    print(f"study {store.root}: {len(store.cases)} cases, readers {', '.join(readers)}, "
          f"start {a.start}, seed {store.meta['seed']}")
    print("tokens (shown once; only their SHA-256 is stored):")
    for who, tok in tokens.items():
        print(f"  {who}: {tok}")
    return 0


def _from_archive(a):
    """The archive's ultrasound images copied into the study folder: ``(manifest, archive)``."""
    from . import archive
    from .store import STUDY_FILE
    if not (a.study_uid or a.patient_id):
        raise InputError("--dicomweb needs the studies: --study-uid UID ... or --patient-id ID")
    folder = Path(a.study)
    if (folder / STUDY_FILE).exists():       # refused before anything is downloaded
        raise InputError(f"{folder}: a study exists already; open it instead of creating")
    pacs = archive.connect(a.dicomweb, a.auth_file, a.ca_bundle)
    images = archive.find_images(pacs, a.study_uid, a.patient_id)
    print(f"{pacs.url}: {len(images)} ultrasound image(s) in "
          f"{len({i[0] for i in images})} study(ies); retrieving", file=sys.stderr)
    manifest = archive.retrieve_cases(pacs, images, folder)
    return manifest, {"url": pacs.url, "studies": sorted({i[0] for i in images})}


def _archive_sync(study, a):
    """The launcher's thread that stores the readers' SEGs (None: the study has no archive).
    Malformed credentials are refused here, in one line, before anything starts."""
    from . import archive
    from .store import StudyStore
    store = StudyStore(study)
    url = (store.meta.get("archive") or {}).get("url")
    if not url:
        return None
    from ..pacs.dicomweb import auth_from
    auth_from(auth_file=getattr(a, "auth_file", None))
    return archive.ArchiveSync(store, url, getattr(a, "auth_file", None),
                               getattr(a, "ca_bundle", None))


def cmd_push(a) -> int:
    from . import archive
    from .store import StudyStore
    store = StudyStore(a.study)
    url = (store.meta.get("archive") or {}).get("url")
    if not url:
        raise InputError(f"{a.study}: this study was not created from an archive "
                         "(station create --dicomweb)")
    res = archive.push_pending(store, archive.connect(url, a.auth_file, a.ca_bundle))
    if res["error"]:
        raise InputError(f"{res['error']} ({res['stored']} stored, {res['pending']} waiting)")
    print(f"{url}: {res['stored']} DICOM SEG(s) stored; {res['pending']} waiting")
    return 0


def _write_private(path, tokens):
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(tokens, f, indent=1)


def plan(store, port: int) -> list:
    """``(role, reader, port)`` for every process of a study: coordinator on ``port``,
    reader *i* (study order) on ``port + i``."""
    last = int(port) + len(store.readers)
    if int(port) < 1 or last > 65535:
        raise InputError(f"--port {port}: the coordinator and {len(store.readers)} readers need "
                         f"ports {port}-{last}, within 1-65535")
    return [("coordinator", None, int(port))] + [
        ("reader", r, int(port) + i) for i, r in enumerate(store.readers, start=1)]


def check_ports(host, ports) -> None:
    """Refuse ports that are taken, in one line, before any process loads Slicer."""
    import socket  # when run, as the module comment says
    for _role, reader, port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
            except OSError as exc:
                who = f"reader {reader}" if reader else "the coordinator"
                raise InputError(f"port {port} on {host} ({who}): {exc.strerror or exc}; "
                                 "choose another --port (reader i uses --port + i)") from None


def _command(study, role, reader, host, port, ready, bundle=None, options=None):
    cmd = [sys.executable, "-m", "HER2RadiomicsLib", "station", "one", "--study", str(study),
           "--role", role, "--host", host, "--port", str(port), "--ready-file", str(ready)]
    if reader:
        cmd += ["--reader", reader]
    if bundle and role == "reader":
        cmd += ["--bundle", str(bundle)]
    for k, v in (options or {}).items():
        if role == "coordinator":
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def _spawn(cmd, log_path, env=None):
    # the child keeps its own copy of the log's descriptor; ours closes at once
    with open(log_path, "ab") as logf:
        return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)


def start_processes(study, host, port, bundle=None, log_dir=None, env=None, options=None):
    """Start the study's processes and wait until each serves; returns ``[(role, reader,
    port, Popen)]``. A process that fails to start stops the others."""
    from .store import StudyStore
    store = StudyStore(study)
    log_dir = Path(log_dir or Path(study) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    planned = plan(store, port)
    check_ports(host, planned)
    procs = []
    try:
        for role, reader, p in planned:
            ready = log_dir / f"{role}-{reader or 'all'}.ready"
            ready.unlink(missing_ok=True)
            cmd = _command(study, role, reader, host, p, ready, bundle, options)
            proc = _spawn(cmd, log_dir / f"{role}-{reader or 'all'}.log", env)
            procs.append((role, reader, p, proc, ready))
        deadline = time.monotonic() + START_TIMEOUT_S
        for role, reader, p, proc, ready in procs:
            _wait_ready(role, reader, p, proc, ready, deadline, log_dir)
    except BaseException:
        stop_processes([(r, rd, p, pr) for r, rd, p, pr, _ in procs])
        raise
    return [(r, rd, p, pr) for r, rd, p, pr, _ in procs]


def _wait_ready(role, reader, port, proc, ready, deadline, log_dir):
    while not ready.exists():
        if proc.poll() is not None:
            raise HER2Error(f"station {role} {reader or ''} on port {port} exited with "
                            f"code {proc.returncode}; see {log_dir}")
        if time.monotonic() > deadline:
            raise HER2Error(f"station {role} {reader or ''} on port {port} did not start "
                            f"in {START_TIMEOUT_S:.0f} s; see {log_dir}")
        time.sleep(0.2)


def stop_processes(procs, timeout_s: float = 10.0):
    for *_, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for *_, proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


class Supervisor:
    """Keeps every process of a study serving: one that dies is started again on its port
    after a back-off (:data:`RESTART_BACKOFF_S`), the others go on; a line on the terminal
    says so each time."""

    def __init__(self, study, host, procs, bundle=None, options=None, env=None, out=None):
        self.study, self.host, self.bundle = study, host, bundle
        self.options, self.env = options or {}, env
        self.out = out or sys.stderr
        self.log_dir = Path(study) / "logs"
        self.slots = [{"role": r, "reader": rd, "port": p, "proc": pr, "crashes": 0,
                       "started": time.monotonic(), "due": None}
                      for r, rd, p, pr in procs]

    @property
    def procs(self):
        return [(s["role"], s["reader"], s["port"], s["proc"]) for s in self.slots]

    def step(self):
        """Look at every process once; restart those whose back-off is over."""
        now = time.monotonic()
        for s in self.slots:
            proc = s["proc"]
            if s["due"] is None and proc is not None and proc.poll() is not None:
                if now - s["started"] > STABLE_S:
                    s["crashes"] = 0
                wait = RESTART_BACKOFF_S[min(s["crashes"], len(RESTART_BACKOFF_S) - 1)]
                s["crashes"] += 1
                s["due"] = now + wait
                who = f"reader {s['reader']}" if s["reader"] else "coordinator"
                print(f"station {who} on port {s['port']} stopped (code {proc.returncode}); "
                      f"restarting in {wait:.0f} s (see {self.log_dir})", file=self.out,
                      flush=True)
            if s["due"] is not None and now >= s["due"]:
                s["due"] = None
                s["started"] = now
                ready = self.log_dir / f"{s['role']}-{s['reader'] or 'all'}.ready"
                ready.unlink(missing_ok=True)
                cmd = _command(self.study, s["role"], s["reader"], self.host, s["port"],
                               ready, self.bundle, self.options)
                s["proc"] = _spawn(cmd, self.log_dir / f"{s['role']}-{s['reader'] or 'all'}"
                                   ".log", self.env)

    def stop(self):
        stop_processes([(0, 0, 0, s["proc"]) for s in self.slots if s["proc"] is not None])


def _serve(study, host, port, bundle=None, tokens=None, options=None, sync=None) -> int:
    _need_station()
    if bundle:
        # refused here, naming the file, rather than as a reader process that fails to start
        from ..modelling.bundle import load_bundle
        load_bundle(bundle)
    from .store import StudyStore
    if make_proposals(StudyStore(study)):      # a study created without them, or new cases
        print("CNN proposals made for the cases that lacked one", file=sys.stderr)
    procs = start_processes(study, host, port, bundle=bundle, options=options)
    tokens = tokens or {}
    print(f"reader station for {study} (Ctrl-C stops it):")
    for role, reader, p, _ in procs:
        who = reader or "coordinator"
        tok = tokens.get(who, "<token>")
        print(f"  {role:<11} {reader or '':<12} http://{host}:{p}/?secret={tok}")
    print("  (each link signs its browser in once; then http://host:port/ is enough)")
    if sync is not None:
        print(f"  DICOM SEGs of saved contours are stored in {sync.url}", file=sys.stderr)
        sync.start()
    sup = Supervisor(study, host, procs, bundle=bundle, options=options)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            sup.step()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
        if sync is not None:
            sync.stop()
    return 0


def cmd_serve(a) -> int:
    tokens = json.loads(Path(a.tokens).read_text()) if a.tokens else None
    return _serve(a.study, a.host, a.port, bundle=a.bundle, tokens=tokens,
                  options={"min_icc_cases": a.min_icc_cases,
                           "warn_icc_cases": a.warn_icc_cases},
                  sync=_archive_sync(a.study, a))


def cmd_demo(a) -> int:
    from ..imaging.synth import generate_cohort
    from .store import StudyStore
    _need_station()
    out = Path(a.out_dir)
    study = out / "study"
    tokens_file = out / "tokens.json"
    if not (study / "study.json").exists():
        manifest = a.manifest
        if not manifest:
            generate_cohort(out / "cohort", n_cases=a.cases, seed=11)
            manifest = out / "cohort" / "cohort.csv"
        store, tokens = StudyStore.create(study, manifest, ["R1", "R2"], start="cnn", seed=11)
        _write_private(tokens_file, tokens)
        make_proposals(store)
    return _serve(study, a.host, a.port, bundle=a.bundle,
                  tokens=json.loads(tokens_file.read_text()))


def cmd_one(a) -> int:
    _need_station()
    sys.argv = sys.argv[:1]             # trame parses the command line; it is ours, not its
    from . import web
    if a.role == "coordinator":
        web.serve_coordinator(a.study, host=a.host, port=a.port, ready_file=a.ready_file,
                              min_cases=a.min_icc_cases, warn_cases=a.warn_icc_cases)
    else:
        if not a.reader:
            raise InputError("station one --role reader needs --reader")
        web.serve_reader(a.study, a.reader, host=a.host, port=a.port, bundle=a.bundle,
                         ready_file=a.ready_file)
    return 0
