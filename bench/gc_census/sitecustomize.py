"""A garbage-collector census for bench/instructions.py ``--gc``: put on a server's PYTHONPATH, it counts each
generation's collections, the objects each one examines (that generation and the younger ones, all tracked
objects for a full collection) and the asyncio tasks alive when it starts, and writes the totals to
``$ZONDA_GC_CENSUS_DIR/census.PID`` twice a second (from a thread started again in a forked worker, so a
server that serves from a child is counted too). Only for measuring: ``gc.get_objects`` per collection is
slow.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from typing import Any

_OUT = os.environ.get("ZONDA_GC_CENSUS_DIR", "")
# per generation: collections, objects examined, tasks alive at the start (in the loop's thread), collected
_census = {generation: [0, 0, 0, 0] for generation in range(3)}


def _tasks_alive() -> int:
    asyncio = sys.modules.get("asyncio")
    try:
        loop = asyncio.get_running_loop()  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):  # not imported yet, or half; not the loop's thread
        return 0
    return len(asyncio.all_tasks(loop))  # type: ignore[union-attr]


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    counts = _census[info["generation"]]
    if phase == "start":
        counts[0] += 1
        counts[1] += sum(len(gc.get_objects(g)) for g in range(info["generation"] + 1))
        counts[2] += _tasks_alive()
    else:
        counts[3] += info["collected"]


def _write_periodically() -> None:
    while True:
        time.sleep(0.5)
        with open(os.path.join(_OUT, f"census.{os.getpid()}"), "w") as out:
            json.dump(_census, out)


def _start() -> None:
    threading.Thread(target=_write_periodically, daemon=True).start()


if _OUT:
    gc.callbacks.append(_on_collection)
    _start()
    os.register_at_fork(after_in_child=_start)
