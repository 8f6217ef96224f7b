"""Images in: calibrated reading (:mod:`.io`: DICOM ultrasound regions, PNG sidecars, grey
conversion, checks), peritumoral rings in mm and the field of view (:mod:`.rings`), and the
built-in synthetic cohort (:mod:`.synth`)."""
