"""Small single-frame DICOM ultrasound images and their lesion masks, for the archive tests
(the reader station on a DICOMweb archive, reader studies from DICOM SEG)."""
from pathlib import Path

import numpy as np


def us_image(path, rows=64, cols=80, seed=0, study_uid=None, patient="P1", modality="US",
             centre=(30, 40)):
    """Write a single-frame Ultrasound Image Storage file (0.1 mm pixels, a bright elliptic
    lesion on speckle) and return its path."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    # an ultrasound image, or for the "no ultrasound" cases a secondary capture
    meta.MediaStorageSOPClassUID = ("1.2.840.10008.5.1.4.1.1.6.1" if modality == "US"
                                    else "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, "TEST^ONE"
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "F", "20260101", "1200"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "1", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.PixelSpacing = [0.1, 0.1]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 120, (rows, cols)).astype(np.uint8)
    img[lesion(rows, cols, centre, 0)] += 100
    ds.PixelData = img.tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:                                 # pydicom 2.4 (Python 3.9, Slicer 5.8)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def lesion(rows=64, cols=80, centre=(30, 40), grow=0):
    """A bool ellipse (rows, cols): a reader's contour, ``grow`` pixels wider."""
    yy, xx = np.mgrid[:rows, :cols]
    return ((yy - centre[0]) ** 2 / (10 + grow) ** 2
            + (xx - centre[1]) ** 2 / (14 + grow) ** 2) <= 1


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())
