"""Alternative execution engines for `stitch embed` (the local engine lives in stitchkit.embed).

Each engine writes the same part files and the same final store as the local engine, so a job
started with one can be resumed with another.
"""
