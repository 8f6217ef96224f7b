"""The hospital's archive (PACS): DICOM SEG and SR objects, and a DICOMweb client.

Install with ``pip install HER2RadiomicsLib[pacs]`` (highdicom, dicomweb-client); nothing else
in the library needs it.

* :mod:`.seg` — read a lesion contour from a DICOM SEG, write a SEG of the lesion and its rings
  (no network code).
* :mod:`.sr` — write and read a DICOM SR TID 1500 measurement report of the features and the
  prediction (no network code).
* :mod:`.dicomweb` — QIDO-RS, WADO-RS and STOW-RS against a DICOMweb server, with
  authentication from the environment or a file and verified TLS.
* :mod:`.run` — ``pacs run``: a study's images in, features, SEG and SR out.
* :mod:`.orthanc` — a local Orthanc for the tests and ``make pacs-demo``.
"""

#: the rings ``pacs run`` builds unless told otherwise (the studies' 3/5/8 mm)
DEFAULT_RINGS = "3,5,8"
