"""The layering rules, read from the source: sans-io cores import no I/O at all, and only ``zonda.io`` (the
drivers) imports an event loop. Imports under ``if TYPE_CHECKING:`` do not count: they never run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "zonda"
LOOPS = {"asyncio", "uvloop", "trio", "anyio"}
IO = LOOPS | {"socket", "ssl", "selectors", "threading"}


def runtime_imports(path: Path) -> set[str]:
    """Top-level package names ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def modules(folder: str = "") -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


def name(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


@pytest.mark.parametrize("path", modules("protocols"), ids=name)
def test_the_protocol_cores_import_no_io(path: Path) -> None:
    assert not runtime_imports(path) & IO


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if not name(p).startswith("io/")],
    ids=name,
)
def test_only_the_drivers_import_an_event_loop(path: Path) -> None:
    assert not runtime_imports(path) & LOOPS
