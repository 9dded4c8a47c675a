"""Golden files: drive strings with their canonical form, warnings or errors.

Each file in golden/ holds blocks separated by blank lines: ``#`` comments, one
``KEY: STRING`` line, then ``= canonical``, ``~ warning`` and ``! error`` lines. The
expectations are written from qemu-server's rules; ``pytest --regen-golden`` rewrites them
from the program's output, to be reviewed as a diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from qdisk.config.drive import parse_drive, print_drive
from qdisk.errors import DriveError

GOLDEN = Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.glob("*.txt"))
RESULT_MARKS = ("= ", "~ ", "! ")


@dataclass
class Case:
    comments: list[str]
    key: str
    text: str
    expected: list[str]


def read_cases(path: Path) -> tuple[list[str], list[Case]]:
    """The file's leading comment lines and its cases."""
    header: list[str] = []
    cases: list[Case] = []
    comments: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            comments.append(line)
        elif line.startswith(RESULT_MARKS):
            cases[-1].expected.append(line)
        elif line.strip() == "":
            if comments and not cases:
                header, comments = comments, []
        else:
            key, _, text = line.partition(":")
            cases.append(Case(comments, key, text.removeprefix(" "), []))
            comments = []
    return header, cases


def outcome(key: str, text: str) -> list[str]:
    try:
        parsed = parse_drive(key, text)
    except DriveError as error:
        return [f"! {line}" for line in error.lines()]
    return [f"= {print_drive(parsed.drive)}", *(f"~ {warning}" for warning in parsed.warnings)]


def write_cases(path: Path, header: list[str], cases: list[Case]) -> None:
    blocks = ["\n".join(header)] if header else []
    for case in cases:
        input_line = f"{case.key}: {case.text}" if case.text else f"{case.key}:"
        blocks.append("\n".join([*case.comments, input_line, *outcome(case.key, case.text)]))
    path.write_text("\n\n".join(blocks) + "\n")


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_golden_file(path: Path, regen_golden: bool) -> None:
    header, cases = read_cases(path)
    assert cases, f"{path} has no cases"
    if regen_golden:
        write_cases(path, header, cases)
        return
    mismatches = [f"{case.key}: {case.text}\n  expected: {case.expected}\n  actual:   "
                  f"{outcome(case.key, case.text)}"
                  for case in cases if outcome(case.key, case.text) != case.expected]
    assert not mismatches, "\n".join(mismatches)


def test_every_canonical_golden_output_is_a_fixed_point() -> None:
    for path in FILES:
        for case in read_cases(path)[1]:
            for line in case.expected:
                if line.startswith("= "):
                    canonical = line.removeprefix("= ")
                    assert outcome(case.key, canonical)[0] == line, (path.name, canonical)


def test_real_config_lines_read_back_unchanged() -> None:
    cases = read_cases(GOLDEN / "real.txt")[1]
    assert len(cases) >= 20
    for case in cases:
        assert case.expected == [f"= {case.text}"], case
