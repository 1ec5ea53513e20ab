"""One direction of imports: rehyat <- evaluation; human_study stands alone; nothing imports reports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "rehyat": {"evaluation", "human_study", "reports"},
    "evaluation": {"human_study", "reports"},
    "human_study": {"rehyat", "evaluation", "reports"},
    "reports": set(),
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_data_direction(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        hits = imported_packages(path) & FORBIDDEN[package]
        if hits:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_reports():
    bad = [str(p.relative_to(ROOT)) for pkg in ("rehyat", "evaluation", "human_study")
           for p in (ROOT / pkg).rglob("*.py") if "reports" in imported_packages(p)]
    assert not bad
