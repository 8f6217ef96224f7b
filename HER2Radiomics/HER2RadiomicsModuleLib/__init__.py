"""Helpers of the HER2Radiomics scripted module, kept in a package beside it.

Slicer's scripted-module factory loads every ``.py`` file in the module folder as a module of
its own, so helpers there would be reported as broken modules at each start-up; a package is
not scanned. ``controller`` says which panel step can run, ``core`` holds every step on MRML
nodes (the module's Logic inherits it), ``mrml`` converts between MRML and SimpleITK/pandas,
``dependencies`` installs the library's requirements into Slicer's Python.
"""
