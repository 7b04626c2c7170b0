"""The `stitch` command line: a thin click layer over the stitchkit library."""
