"""What every target shares: its corpus directory, the two engines (atheris when installed, else Hypothesis)
and the structure-aware byte strategy the Hypothesis engine and the smoke test use.

A target is one function ``one_input(data: bytes) -> None`` that raises ``AssertionError`` (or anything
undocumented) when an invariant breaks; seeds are valid-ish inputs it reaches deep states from.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
# The targets reuse the sans-io test helpers (fake clock, HTTP/2 frame builders) rather than copy them.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

Target = Callable[[bytes], None]


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

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs(seeds))
    def drive(data: bytes) -> None:
        nonlocal count
        if time.monotonic() < stop_at:
            count += 1
            target(data)

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
    argv = [sys.argv[0], *rest, f"-max_total_time={args.seconds}", str(work), str(CORPUS / name)]
    os.environ.setdefault("ZONDA_FUZZ", "1")
    atheris.Setup(argv, target)
    atheris.Fuzz()
