"""Fuzz targets (run outside the suite: see docs/fuzzing.md). Nothing here is collected by pytest."""
