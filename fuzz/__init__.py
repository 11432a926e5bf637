"""Fuzz targets for zonda's sans-io cores and parsers; see fuzz/README.md."""

import sys
from pathlib import Path

# The targets reuse the sans-io test helpers (fake clock, HTTP/2 and WebSocket frame builders) rather than copy
# them: tests/ goes on the path before any target or helper module is imported.
_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
