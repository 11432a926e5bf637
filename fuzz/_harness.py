"""What every target shares: its corpus directory, the two engines (atheris when installed, else Hypothesis)
and the structure-aware byte strategy the Hypothesis engine and the smoke test use.

A target is one function ``one_input(data: bytes) -> None`` that raises ``AssertionError`` (or anything
undocumented) when an invariant breaks; seeds are valid-ish inputs it reaches deep states from.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

Target = Callable[[bytes], None]
T = TypeVar("T")


class Reader:
    """Structured draws from a fuzz input, front to back; past its end every draw is 0 (or empty), so any
    bytes decode to something and a mutation changes only the draws it touches."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.data)

    def byte(self) -> int:
        if self.position >= len(self.data):
            return 0
        self.position += 1
        return self.data[self.position - 1]

    def below(self, count: int) -> int:
        return self.byte() % count

    def pick(self, items: Sequence[T]) -> T:
        return items[self.byte() % len(items)]

    def chunk(self, limit: int) -> bytes:
        """A length byte (taken modulo ``limit + 1``), then that many bytes."""
        size = self.byte() % (limit + 1)
        piece = self.data[self.position : self.position + size]
        self.position += size
        return piece


def pieces(rng: random.Random, data: bytes, sizes: Sequence[int] = (1, 2, 3, 9, 64)) -> Iterator[bytes]:
    """``data`` in drawn cuts (a size from ``sizes``, or all the rest), no more than about 64 of them: a large
    input fed a byte at a time would take seconds, and a slow input holds up a whole run."""
    floor = len(data) // 64
    position = 0
    while position < len(data):
        size = max(floor, rng.choice(sizes) if rng.random() < 0.85 else len(data))
        yield data[position : position + size]
        position += size


def pack(*parts: int | bytes | str) -> bytes:
    """The bytes a ``Reader`` decodes back: an int is one draw, bytes (or latin-1 text) one ``chunk``."""
    out = bytearray()
    for part in parts:
        if isinstance(part, int):
            out.append(part)
        else:
            raw = part.encode("latin-1") if isinstance(part, str) else part
            out.append(len(raw))
            out += raw
    return bytes(out)


def corpus(name: str) -> list[bytes]:
    directory = CORPUS / name
    if not directory.is_dir():
        return []
    return [path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()]


def write_seeds(name: str, seeds: Sequence[bytes]) -> None:
    directory = CORPUS / name
    directory.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        (directory / f"seed-{index:03d}").write_bytes(seed)


@st.composite
def _mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with a few splices: bytes replaced, inserted, dropped or duplicated at drawn places."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[at : at + draw(st.integers(1, 4))] = draw(st.binary(min_size=1, max_size=4))
        elif kind == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 2:
            del data[at : at + draw(st.integers(1, 16))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 32))]
    return bytes(data)


def inputs(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Raw bytes, seeds, and mutated seeds: Hypothesis is not coverage-guided, so the seeds carry the depth."""
    if not seeds:
        return st.binary(max_size=512)
    return st.one_of(st.binary(max_size=512), st.sampled_from(seeds), _mutated(seeds))


def run_hypothesis(target: Target, seeds: Sequence[bytes], max_examples: int, deadline_s: float) -> int:
    """Corpus first, then drawn inputs until ``max_examples`` or ``deadline_s`` seconds; returns the count."""
    for seed in seeds:
        target(seed)
    stop_at = time.monotonic() + deadline_s
    count = 0

    # In batches: a @given test has no time limit, and inputs drawn past the deadline still cost their
    # drawing, so one batch of 10**9 examples never ended.
    @settings(
        max_examples=min(max_examples, 500),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs(seeds))
    def drive(data: bytes) -> None:
        nonlocal count
        if count < max_examples and time.monotonic() < stop_at:
            count += 1
            target(data)

    while count < max_examples and time.monotonic() < stop_at:
        drive()
    return len(seeds) + count


def main(name: str, target: Target, seeds: Sequence[bytes]) -> None:
    """``python -m fuzz.<name> [--seconds N] [--engine atheris|hypothesis] [--write-seeds]``."""
    parser = argparse.ArgumentParser(prog=f"python -m fuzz.{name}")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default=None)
    parser.add_argument("--write-seeds", action="store_true", help="write the built-in seeds to the corpus")
    args, rest = parser.parse_known_args()
    if args.write_seeds:
        write_seeds(name, seeds)
        return
    engine = args.engine
    if engine is None:
        try:
            import atheris
        except ImportError:
            engine = "hypothesis"
        else:
            engine = "atheris"
    if engine == "hypothesis":
        count = run_hypothesis(target, [*corpus(name), *seeds], 10**9, args.seconds)
        print(f"{name}: {count} inputs in {args.seconds}s, no failure (Hypothesis, not coverage-guided)")
        return
    import atheris

    atheris.instrument_all()  # every module already imported: zonda's cores and the independent parsers
    work = CORPUS / f"{name}-run"  # grows during the run; the committed corpus stays small
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], *rest, str(work), str(CORPUS / name)]
    os.environ.setdefault("ZONDA_FUZZ", "1")
    # libFuzzer's -max_total_time did not end instrumented runs (they ran on until killed); the target
    # itself ends the process once the time is up, counted from the first input, after instrumenting.
    stop_at: float | None = None

    def bounded(data: bytes) -> None:
        nonlocal stop_at
        now = time.monotonic()
        if stop_at is None:
            stop_at = now + args.seconds
        elif now > stop_at:
            print(f"{name}: {args.seconds}s of inputs, no failure (atheris)", file=sys.stderr, flush=True)
            os._exit(0)  # the grown corpus is on disk already; libFuzzer has nothing left to save
        target(data)

    atheris.Setup(argv, bounded)
    atheris.Fuzz()
