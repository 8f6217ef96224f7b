"""A DICOMweb server (QIDO-RS, WADO-RS, STOW-RS) through dicomweb-client, with every failure
turned into one line that names the URL.

Authentication never comes from the command line (a shell history and ``ps`` would show it):

* ``HER2RADIOMICS_PACS_TOKEN`` — a bearer token;
* ``HER2RADIOMICS_PACS_USER`` and ``HER2RADIOMICS_PACS_PASSWORD`` — HTTP basic;
* or a file (``--auth-file``) holding one line ``bearer <token>`` or ``basic <user>:<password>``.

TLS certificates are verified (``--ca-bundle`` names a hospital's own certificate authority);
there is no switch to turn verification off.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InputError

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
#: Seconds to wait for a server's answer: a PACS on a hospital network answers in seconds, an
#: unreachable host should not hang a batch for minutes.
TIMEOUT_S = 60
RETRY_ATTEMPTS, RETRY_WAIT_MS = 3, 500


class NotFound(InputError):
    """The server answered 404 for a study or an instance."""


class _NotQido(Exception):
    """An answer that is not a QIDO-RS result (HTML, other JSON, 404 on the root query)."""


@dataclass(frozen=True)
class Auth:
    """How to sign in: ``kind`` "basic" (``user``, ``secret`` = password) or "bearer"
    (``secret`` = token). ``repr`` never shows the secret."""

    kind: str
    secret: str
    user: str = ""

    def __repr__(self):
        return f"Auth({self.kind}{', user=' + self.user if self.user else ''})"


def auth_from(environ=None, auth_file=None) -> Auth | None:
    """The credentials from ``auth_file`` (when given) or the environment; None when none.

    Raises
    ------
    InputError
        An unreadable or malformed file, or a user without a password.
    """
    env = os.environ if environ is None else environ
    if auth_file:
        path = Path(auth_file)
        try:
            line = path.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise InputError(f"{path}: cannot read the credentials file "
                             f"({getattr(exc, 'strerror', None) or 'empty'})") from exc
        kind, _, rest = line.partition(" ")
        kind, rest = kind.lower(), rest.strip()
        if kind == "bearer" and rest:
            return Auth("bearer", rest)
        if kind == "basic" and ":" in rest:
            user, _, pw = rest.partition(":")
            return Auth("basic", pw, user)
        raise InputError(f"{path}: the credentials file must hold one line 'bearer <token>' or "
                         "'basic <user>:<password>'")
    if env.get("HER2RADIOMICS_PACS_TOKEN"):
        return Auth("bearer", env["HER2RADIOMICS_PACS_TOKEN"])
    user = env.get("HER2RADIOMICS_PACS_USER")
    if user:
        if not env.get("HER2RADIOMICS_PACS_PASSWORD"):
            raise InputError("HER2RADIOMICS_PACS_USER is set without HER2RADIOMICS_PACS_PASSWORD")
        return Auth("basic", env["HER2RADIOMICS_PACS_PASSWORD"], user)
    return None


def check_url(url: str) -> str:
    """The DICOMweb base URL without a trailing slash; refuses credentials inside it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{url}: not an http(s) DICOMweb URL (e.g. "
                         "https://pacs.example.org/dicom-web)")
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") \
        + parts.path
    if parts.username or parts.password:
        raise InputError(f"{parts.scheme}://{parts.hostname}: credentials in the URL would sit "
                         "on the command line; use HER2RADIOMICS_PACS_USER/_PASSWORD, "
                         "HER2RADIOMICS_PACS_TOKEN or --auth-file")
    if parts.query or parts.fragment:
        # a DICOMweb root has no query string; one such as ?access_token=... would carry a
        # credential on the command line and into every error line: refused, never echoed
        raise InputError(f"{shown}: a DICOMweb root URL has no query string (?...) or "
                         "fragment (#...); credentials go in HER2RADIOMICS_PACS_TOKEN, "
                         "HER2RADIOMICS_PACS_USER/_PASSWORD or --auth-file")
    return url.rstrip("/")


def _tls_reason(exc) -> str:
    """The SSL library's own words (``certificate verify failed: ...``, ``[SSL:
    WRONG_VERSION_NUMBER] ...``) out of requests' long retry message."""
    import re
    m = re.search(r"(certificate verify failed[^'\")]*|\[SSL: [A-Z_]+\][^'\")]*)", str(exc))
    return m.group(1).strip() if m else _first_line(exc)


def _first_line(exc) -> str:
    """The message's first line, shortened at a word (never mid-word) past 200 characters."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0]
    return line if len(line) <= 200 else line[:200].rsplit(" ", 1)[0] + " ..."


#: what a refused/unresolvable/timed-out connection says, out of requests' long retry message
_CONN_REASONS = ("Connection refused", "Name or service not known",
                 "Temporary failure in name resolution", "nodename nor servname provided",
                 "No route to host", "Network is unreachable", "Connection reset by peer",
                 "Remote end closed connection without response", "timed out")


def _conn_reason(exc) -> str:
    text = str(exc)
    for reason in _CONN_REASONS:
        if reason.lower() in text.lower():
            return reason[0].lower() + reason[1:]
    return _first_line(exc)


class Pacs:
    """One DICOMweb server.

    Parameters
    ----------
    url : str
        The DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
    auth : Auth, optional
    ca_bundle : path, optional
        A CA certificate file to verify the server's TLS certificate with (default: the
        system's).
    """

    def __init__(self, url: str, auth: Auth | None = None, ca_bundle=None):
        try:
            import requests
            from dicomweb_client.api import DICOMwebClient
        except ImportError as exc:
            raise InputError("PACS access needs dicomweb-client: pip install "
                             "'HER2RadiomicsLib[pacs]'") from exc
        self.url = check_url(url)
        self.auth = auth
        session = _timeout_session(requests)()
        session.verify = str(ca_bundle) if ca_bundle else True
        if auth is not None and auth.kind == "basic":
            session.auth = (auth.user, auth.secret)
        elif auth is not None:
            session.headers["Authorization"] = f"Bearer {auth.secret}"
        self._requests = requests
        self.client = DICOMwebClient(self.url, session=session)
        # dicomweb-client retries 5 times with exponential back-off, on 408/429/503/504 and on
        # any exception (a refused connection too): 3 attempts, 1 s then 2 s apart, keep a busy
        # server's retry and let an unreachable one fail in seconds, not half a minute
        self.client.set_http_retry_params(retry=True, max_attempts=RETRY_ATTEMPTS,
                                          wait_exponential_multiplier=RETRY_WAIT_MS)

    def _call(self, what: str, fn, *args, **kw):
        req = self._requests
        try:
            return fn(*args, **kw)
        except req.exceptions.SSLError as exc:
            raise InputError(f"{self.url}: TLS failed ({_tls_reason(exc)}); a hospital CA is "
                             "given with --ca-bundle") from exc
        except (req.exceptions.ConnectionError, req.exceptions.Timeout) as exc:
            raise InputError(f"{self.url}: cannot reach the server ({_conn_reason(exc)})") \
                from exc
        except req.exceptions.HTTPError as exc:
            code = getattr(exc.response, "status_code", None)
            if code == 401 and self.auth is None:
                raise InputError(f"{self.url}: the server requires credentials (HTTP 401): set "
                                 "HER2RADIOMICS_PACS_TOKEN or HER2RADIOMICS_PACS_USER/_PASSWORD, "
                                 "or --auth-file") from exc
            if code in (401, 403):
                raise InputError(f"{self.url}: the server refused the credentials (HTTP {code}); "
                                 "check HER2RADIOMICS_PACS_USER/_PASSWORD, "
                                 "HER2RADIOMICS_PACS_TOKEN or --auth-file") from exc
            if code == 404:
                raise NotFound(f"{self.url}: {what}: not found (HTTP 404)") from exc
            raise InputError(f"{self.url}: {what}: HTTP {code} ({_first_line(exc)})") from exc
        except (ValueError, OSError) as exc:
            raise InputError(f"{self.url}: {what}: {_first_line(exc)}") from exc

    # QIDO-RS
    def not_dicomweb(self) -> InputError:
        """The one line for a URL whose answers are not QIDO-RS results (a web page, another
        REST API such as Orthanc's own root, a login page answering 200)."""
        hint = "" if self.url.rstrip("/").endswith("/dicom-web") else \
            f"; did you mean {self.url}/dicom-web?"
        return InputError(f"{self.url}: the URL does not answer DICOMweb QIDO-RS (its answer "
                          f"is not a list of DICOM JSON objects{hint})")

    def _search(self, what: str, fn, *args, root: bool = False, **kw) -> list:
        """A QIDO-RS search whose answer is checked to be a JSON list of objects; ``root``:
        the server's /studies, which every DICOMweb server answers (400/404/405 there: not
        one)."""
        req = self._requests

        def checked():
            try:
                res = fn(*args, **kw)
            except ValueError as exc:              # not JSON (an HTML page, say)
                raise _NotQido from exc
            except req.exceptions.HTTPError as exc:
                # the standard's /studies search (with limit) refused as unknown, malformed
                # or not allowed: not a QIDO-RS root (Orthanc's REST root says 400 to limit)
                if root and getattr(exc.response, "status_code", None) in (400, 404, 405):
                    raise _NotQido from exc
                raise
            if not isinstance(res, list) or not all(isinstance(d, dict) for d in res):
                raise _NotQido
            return res
        try:
            return self._call(what, checked)
        except _NotQido:
            raise self.not_dicomweb() from None

    def probe(self) -> None:
        """Check that the server answers QIDO-RS at all (before saying a study is missing)."""
        self._search("search studies", self.client.search_for_studies, root=True, limit=1)

    def studies(self, patient_id: str | None = None) -> list:
        filters = {"PatientID": patient_id} if patient_id else None
        return [_plain(d) for d in self._search(
            "search studies", self.client.search_for_studies, root=True,
            search_filters=filters, fields=["StudyDescription", "ModalitiesInStudy"])]

    def series(self, study: str) -> list:
        return [_plain(d) for d in self._search(
            f"study {study}", self.client.search_for_series, study,
            fields=["SeriesDescription", "SeriesDate", "Manufacturer"])]

    def instances(self, study: str) -> list:
        return [_plain(d) for d in self._search(
            f"study {study}", self.client.search_for_instances, study,
            fields=["ContentDate", "ContentTime", "NumberOfFrames"])]

    def exists(self, study: str, sop_uid: str) -> bool:
        found = self._search(f"study {study}", self.client.search_for_instances, study,
                             search_filters={"SOPInstanceUID": sop_uid})
        return any(_plain(d).get("SOPInstanceUID") == sop_uid for d in found)

    # WADO-RS
    def retrieve(self, study: str, series: str, sop_uid: str):
        return self._call(f"instance {sop_uid}", self.client.retrieve_instance, study, series,
                          sop_uid)

    # STOW-RS
    def store(self, datasets: list, study: str) -> None:
        res = self._call(f"store in study {study}", self.client.store_instances, datasets,
                         study)
        failed = list(getattr(res, "FailedSOPSequence", []) or [])
        if failed:
            uids = ", ".join(str(f.ReferencedSOPInstanceUID) for f in failed)
            reasons = ", ".join(str(getattr(f, "FailureReason", "?")) for f in failed)
            raise InputError(f"{self.url}: the server refused to store {uids} (failure reason "
                             f"{reasons})")


def _timeout_session(requests):
    class TimeoutSession(requests.Session):
        """dicomweb-client sets no timeout of its own: an unreachable host must not hang."""


        def request(self, method, url, **kw):
            kw.setdefault("timeout", TIMEOUT_S)
            # per request: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a
            # session's verify (psf/requests#4726), which would drop --ca-bundle
            kw.setdefault("verify", self.verify)
            return super().request(method, url, **kw)
    return TimeoutSession


#: DICOM JSON tags -> keywords of the attributes this module reads from QIDO-RS answers
_TAGS = {"0020000D": "StudyInstanceUID", "0020000E": "SeriesInstanceUID",
         "00080018": "SOPInstanceUID", "00080016": "SOPClassUID", "00080060": "Modality",
         "00080061": "ModalitiesInStudy", "00080020": "StudyDate", "00080021": "SeriesDate",
         "00081030": "StudyDescription", "0008103E": "SeriesDescription",
         "00100020": "PatientID", "00100010": "PatientName", "00080023": "ContentDate",
         "00080033": "ContentTime", "00280008": "NumberOfFrames", "00080070": "Manufacturer",
         "00200011": "SeriesNumber", "00201208": "NumberOfStudyRelatedInstances",
         "00201209": "NumberOfSeriesRelatedInstances"}


def _plain(d: dict) -> dict:
    """A QIDO-RS JSON result as ``{keyword: value}`` (first value; lists for multi-valued)."""
    out = {}
    for tag, kw in _TAGS.items():
        vals = (d.get(tag) or {}).get("Value") or []
        if not vals:
            continue
        v = vals[0]
        if isinstance(v, dict):          # a person name
            v = v.get("Alphabetic", "")
        out[kw] = [str(x) for x in vals] if kw == "ModalitiesInStudy" else str(v)
    return out


def is_ultrasound(meta: dict) -> bool:
    return meta.get("SOPClassUID") in (US_IMAGE, US_MULTIFRAME) or meta.get("Modality") == "US"
