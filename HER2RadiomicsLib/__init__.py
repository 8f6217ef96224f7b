"""HER2RadiomicsLib: breast-ultrasound radiomics for HER2 status (research use only).

Plain Python (SimpleITK, pyradiomics, scikit-learn, torch); never imports Slicer, Qt, VTK or
CTK, so the same code serves the Slicer module, the command line and the tests.
"""
__version__ = "0.1.0"
