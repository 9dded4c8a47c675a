"""debian/control against pyproject.toml: every Python dependency of qdisk is a relation of
the Debian package (Depends, or Suggests for the plots), so that a new dependency is not
forgotten in the package; `make test-deb` would find it only when the package is built."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
# The dependencies the package leaves to others, and why.
LEFT_OUT = {
    "httptools": "Debian 13's python3-httptools (0.1.1) is older than uvicorn accepts",
    "uvloop": "python3-uvicorn depends on python3-uvloop in Debian 13",
}
SUGGESTED = {"matplotlib"}


def qdisk_relations() -> dict[str, set[str]]:
    """The qdisk paragraph's relation fields: field -> the package names in it."""
    text = (CHECKOUT / "debian" / "control").read_text()
    paragraph = next(part for part in text.split("\n\n") if part.startswith("Package: qdisk\n"))
    fields: dict[str, str] = {}
    field = ""
    for line in paragraph.splitlines():
        if line.startswith(" "):
            fields[field] += line
        else:
            field, _, value = line.partition(":")
            fields[field] = value
    return {field: {re.split(r"[\s(]", item.strip())[0] for item in value.split(",") if item.strip()}
            for field, value in fields.items() if field in ("Depends", "Recommends", "Suggests")}


def test_every_python_dependency_is_a_relation_of_the_debian_package() -> None:
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    names = [re.match(r"[A-Za-z0-9_.-]+", requirement)[0].lower()  # type: ignore[index]
             for requirement in project["dependencies"]]
    relations = qdisk_relations()
    assert "python3-click" in relations["Depends"]
    missing = [f"python3-{name} ({'Suggests' if name in SUGGESTED else 'Depends'})"
               for name in names if name not in LEFT_OUT
               and f"python3-{name}" not in relations["Suggests" if name in SUGGESTED else "Depends"]]
    assert missing == [], f"debian/control lacks {', '.join(missing)}"
