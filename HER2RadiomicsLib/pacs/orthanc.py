"""A local Orthanc (a PACS with DICOMweb) for the tests and ``make pacs-demo``.

Debian's ``orthanc`` and ``orthanc-dicomweb`` run as a plain process of this user: a generated
configuration in a temporary folder (storage and index there), HTTP on a free loopback port,
the DICOM network protocol off, remote access refused. :class:`LocalOrthanc` is a context
manager; the process is stopped (and its folder removed) on exit.

Example
-------
>>> with LocalOrthanc() as pacs:                                              # doctest: +SKIP
...     print(pacs.dicomweb_url)      # http://127.0.0.1:PORT/dicom-web
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InputError

#: Debian's paths (packages orthanc and orthanc-dicomweb); HER2RADIOMICS_ORTHANC and
#: HER2RADIOMICS_ORTHANC_DICOMWEB override them.
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: Orthanc 1.10 with an empty index answers in about a second; a slow, shared machine gets 30.
START_TIMEOUT_S = 30.0


def orthanc_binary() -> str | None:
    """Orthanc's path when it and its DICOMweb plugin are installed, else None."""
    exe = os.environ.get("HER2RADIOMICS_ORTHANC", ORTHANC)
    plugin = os.environ.get("HER2RADIOMICS_ORTHANC_DICOMWEB", DICOMWEB_PLUGIN)
    exe = exe if Path(exe).is_file() else shutil.which("Orthanc")
    return exe if exe and Path(plugin).is_file() else None


def missing_reason() -> str:
    """Why a local Orthanc cannot start here ('' when it can)."""
    if orthanc_binary():
        return ""
    return ("Orthanc with its DICOMweb plugin is not installed (Debian: apt-get install "
            "orthanc orthanc-dicomweb)")


def _die_with_parent() -> None:
    """In the child, before Orthanc starts: ask Linux for SIGTERM when the parent dies
    (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))   # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalOrthanc:
    """An Orthanc process on 127.0.0.1 with DICOMweb at ``/dicom-web/``.

    Parameters
    ----------
    users : dict, optional
        ``{user: password}``: HTTP basic authentication required (else none).
    folder : path, optional
        Where storage, index, configuration and log go (default: a new temporary folder,
        removed on stop).
    """

    def __init__(self, users: dict | None = None, folder=None):
        self.users = dict(users or {})
        self._own_folder = folder is None
        self.folder = Path(folder) if folder else None
        self.port = None
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def config(self) -> dict:
        return {
            "Name": "HER2Radiomics local PACS",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.port,
            "DicomServerEnabled": False,          # DICOMweb only: no DIMSE port to open
            "RemoteAccessAllowed": False,         # loopback only
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [os.environ.get("HER2RADIOMICS_ORTHANC_DICOMWEB", DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
        }

    def start(self) -> "LocalOrthanc":
        exe = orthanc_binary()
        if not exe:
            raise InputError(f"{ORTHANC}: {missing_reason()}")
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="her2radiomics-orthanc-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        for _ in range(3):             # a port taken between choosing and binding: try another
            self.port = _free_port()
            cfg = self.folder / "orthanc.json"
            cfg.write_text(json.dumps(self.config(), indent=2))
            log = open(self.log_path, "ab")
            # its own process group (a Ctrl-C at the terminal reaches us, and we stop it) and,
            # on Linux, a SIGTERM when we die: a killed `pacs demo` leaves no Orthanc behind
            self.process = subprocess.Popen([exe, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=_die_with_parent
                                            if sys.platform.startswith("linux") else None)
            log.close()
            if self._wait_ready(deadline):
                return self
            self.stop(remove=False)
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
        raise InputError(f"{exe}: Orthanc did not start ({tail[0] if tail else 'no log'}; "
                         f"see {self.log_path})")

    def _wait_ready(self, deadline: float) -> bool:
        req = urllib.request.Request(f"{self.url}/system")
        if self.users:
            import base64
            user, pw = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{pw}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def stop(self, remove: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if remove and self._own_folder and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
