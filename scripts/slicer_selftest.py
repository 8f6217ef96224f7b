"""Run the HER2Radiomics self-test inside Slicer and exit with its status (for CI with Slicer).

    Slicer --no-main-window --testing \
        --additional-module-paths HER2Radiomics HER2RadiomicsCLI \
        --python-script scripts/slicer_selftest.py
"""
import traceback

import slicer

try:
    import HER2Radiomics
    HER2Radiomics.HER2RadiomicsTest().runTest()
except Exception:  # noqa: BLE001 -- any failure must turn into a non-zero exit code for the caller
    traceback.print_exc()
    slicer.util.exit(1)
else:
    print("HER2Radiomics self-test passed")
    slicer.util.exit(0)
