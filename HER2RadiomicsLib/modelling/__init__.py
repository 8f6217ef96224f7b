"""Models: scikit-learn transformers and classifiers (:mod:`.transformers`), ComBat
(:mod:`.harmonization`), study recipes (:mod:`.study`), evaluation, nomogram, model bundles
(:mod:`.bundle`), prediction (:mod:`.predict`) and their commands (:mod:`.commands`)."""
