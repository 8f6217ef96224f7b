"""The browser reader station.

:mod:`.store` holds the study's rules (queues, contours, access, agreement) and needs only the
library; :mod:`.web` is the web front end on Slicer's core (trame-slicer, the ``station``
extra) and :mod:`.commands` the ``her2radiomics station`` command that starts it. Nothing here
imports the web stack until a station runs.
"""
