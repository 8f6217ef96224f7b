"""The browser reader station's backend (queues, contours, access, agreement).

:mod:`.store` needs only the library; the web front end, which needs Slicer's core, is imported
only by its command.
"""
