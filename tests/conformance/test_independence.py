"""The minimal device is written from firmware_protocol.md alone: it uses none of the project's code.

If it imported ``protocol`` (or anything built on it), a mistake shared by the document's code
twin and the checker could pass unnoticed; the checker must be shown to work on a device that
only read the document.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

DEVICE = Path(__file__).with_name("minimal_device.py")
PROJECT = {"protocol", "device_sim", "hub", "broker", "cli", "bench"}
ALLOWED_THIRD_PARTY = {"paho", "cbor2"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                roots.add(".")  # a relative import reaches into whatever package holds it
            elif node.module:
                roots.add(node.module.split(".")[0])
    return roots


def test_the_minimal_device_imports_only_the_standard_library_paho_and_cbor2() -> None:
    roots = imported_roots(DEVICE)
    assert "paho" in roots and "cbor2" in roots  # the check below is looking at real imports
    assert not roots & PROJECT
    assert roots <= set(sys.stdlib_module_names) | ALLOWED_THIRD_PARTY, roots - set(sys.stdlib_module_names)


def test_importing_the_minimal_device_loads_no_project_package() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import minimal_device; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(PROJECT)!r})))")
    out = subprocess.run([sys.executable, "-c", code, str(DEVICE.parent)], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
