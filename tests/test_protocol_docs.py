"""docs/PROTOCOLS.md: every row of its tables names the test that pins it, and every test it names exists."""
import ast
import re
from conftest import ROOT

REFERENCE = re.compile(r"`(test_\w+\.py)?::(\w+)(?:\[[^\]`]*\])?`|`(test_\w+\.py)`")


def test_functions() -> dict[str, set[str]]:
    return {path.name: {node.name for node in ast.walk(ast.parse(path.read_text()))
                        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
            for path in (ROOT / "tests").glob("test_*.py")}


test_functions.__test__ = False  # a helper, not a test


def table_rows(text: str) -> list[str]:
    """The body rows of every markdown table (header and separator lines left out)."""
    lines = text.splitlines()
    return [line for i, line in enumerate(lines)
            if line.startswith("|") and i + 1 < len(lines) and not lines[i + 1].startswith("|---")
            and not line.startswith("|---")]


def test_every_protocol_row_names_a_test_that_exists():
    defined = test_functions()
    rows = table_rows((ROOT / "docs" / "PROTOCOLS.md").read_text())
    assert len(rows) > 60  # the tables are there
    for row in rows:
        pinned_by = row.rstrip(" |").rsplit(" | ", 1)[-1]
        names, current = [], None
        for match in REFERENCE.finditer(pinned_by):
            file, function, bare = match.groups()
            assert bare is None, f"names a file, not a test: {bare} in {row[:60]}"
            current = file or current
            assert current is not None, f"'::{function}' without a file before it in {row[:60]}"
            names.append((current, function))
        assert names, f"no test named in the row {row[:80]!r}"
        for file, function in names:
            assert function in defined.get(file, set()), f"{file}::{function} (row {row[:60]!r}) does not exist"
