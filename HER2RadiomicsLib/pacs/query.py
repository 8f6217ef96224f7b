"""``pacs query``: studies (or one study's series) on a DICOMweb server, with what this tool
stored there (its SEG and SR series are recognised by their Series Description)."""
from __future__ import annotations

from . import dicomweb
from .seg import build_seg
from .sr import SR_SERIES_DESCRIPTION

#: Series descriptions this tool writes (SEG: build_seg's default; SR: the report's).
OUR_SERIES = {build_seg.__kwdefaults__["series_description"]: "SEG",
              SR_SERIES_DESCRIPTION: "SR"}


def _ours(series: list) -> str:
    kinds = {}
    for s in series:
        kind = OUR_SERIES.get(s.get("SeriesDescription", ""))
        if kind:
            n = int(s.get("NumberOfSeriesRelatedInstances") or 0)
            kinds[kind] = kinds.get(kind, 0) + n
    return ", ".join(f"{k} {n} instance{'s' if n != 1 else ''}" for k, n in sorted(kinds.items())) \
        or "nothing"


def query_lines(url: str, auth=None, ca_bundle=None, study: str | None = None,
                patient: str | None = None) -> list:
    """Lines to print: one per study, or with ``study`` one per series of it."""
    pacs = dicomweb.Pacs(url, auth, ca_bundle)
    if study:
        series = pacs.series(study)
        if not series:
            from ..errors import InputError
            raise InputError(f"{pacs.url}: study {study} not found")
        lines = [f"study {study}: stored by HER2Radiomics: {_ours(series)}"]
        for s in series:
            mark = "  [HER2Radiomics]" if s.get("SeriesDescription") in OUR_SERIES else ""
            lines.append(f"  {s.get('SeriesInstanceUID', '?')}  {s.get('Modality', '?'):4s} "
                         f"date {s.get('SeriesDate', '-') or '-'}  "
                         f"{s.get('NumberOfSeriesRelatedInstances', '?')} instances  "
                         f"{s.get('SeriesDescription', '')}{mark}")
        return lines
    studies = pacs.studies(patient)
    lines = []
    for st in studies:
        uid = st.get("StudyInstanceUID", "?")
        mods = ",".join(st.get("ModalitiesInStudy") or []) or "?"
        lines.append(f"{uid}  patient {st.get('PatientID', '?')}  date "
                     f"{st.get('StudyDate', '-') or '-'}  modalities {mods}  "
                     f"stored by HER2Radiomics: {_ours(pacs.series(uid))}")
    return lines or [f"{pacs.url}: no study found"]
