"""Fuzz targets for zonda's sans-io cores and parsers; see fuzz/README.md."""
