"""All SQL of fleet.db lives in hub/storage/: no statement and no execute call anywhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("broker", "hub", "cli", "device_sim", "protocol")
EXEMPT = {
    ROOT / "hub" / "storage",  # the owner
    ROOT / "device_sim" / "ledger.py",  # the simulator's own database, not fleet.db
}
SQL = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIEW|TRIGGER"
    r"|UNIQUE\s+INDEX)|DROP\s+(TABLE|INDEX|VIEW)|ALTER\s+TABLE|PRAGMA\s+\w+|BEGIN\s+(IMMEDIATE|EXCLUSIVE)|VACUUM\b)",
    re.S,
)
CALLS = {"execute", "executemany", "executescript"}


def sources() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if not any(path == e or e in path.parents for e in EXEMPT):
                files.append(path)
    return files


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose may name SQL words)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if SQL.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: SQL text {node.value[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CALLS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.func.attr}() call")
        elif isinstance(node, ast.Attribute) and node.attr == "connect" and getattr(node.value, "id", "") == "sqlite3":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: sqlite3.connect (open through hub.storage)")
    return found


def test_no_sql_outside_the_storage_package() -> None:
    files = sources()
    assert len(files) > 50  # the scan sees the tree
    found = [o for path in files for o in offences(path)]
    assert found == [], "SQL outside hub/storage/:\n" + "\n".join(found)


def test_the_scan_catches_sql(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""SELECT words in a docstring are prose."""\n'
                      'q = "SELECT id FROM principals"\nconn.execute(q)\nimport sqlite3\nsqlite3.connect("x")\n')
    found = [o.split(": ", 1)[1] for o in offences_at(sample)]
    assert found == ["SQL text 'SELECT id FROM principals'", ".execute() call",
                     "sqlite3.connect (open through hub.storage)"]


def offences_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return sorted(offences(path), key=lambda o: int(o.split(":")[1]))
    finally:
        ROOT = saved


def test_storage_imports_nothing_above_it() -> None:
    for path in sorted((ROOT / "hub" / "storage").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                assert top not in {"broker", "cli", "device_sim"}, f"{path.name} imports {name}"
                assert top != "hub" or name.startswith("hub.storage"), f"{path.name} imports {name}"
