from collections.abc import Callable
from typing import Any

class Recorder:
    def __init__(
        self,
        series: dict[str, dict[str, list[Any]]],
        fallback: Callable[[Any], None],
        clock: Callable[[], float],
        bounds: tuple[float, ...],
        latency: int,
    ) -> None: ...
    def __call__(self, cycle: Any, /) -> None: ...
