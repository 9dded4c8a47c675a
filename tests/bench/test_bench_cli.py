"""The CLI's own parts: sizes, and progress off a terminal."""

from __future__ import annotations

import io

import click
import pytest

from qdisk.bench import Progress
from qdisk.cli.bench import ProgressDisplay, parse_size


@pytest.mark.parametrize(("text", "size"), [("1T", 1 << 40), ("64G", 64 << 30), ("1.5G", 3 << 29),
                                            ("1048576", 1 << 20)])
def test_sizes_are_disk_sizes_as_in_drive_strings(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1X", "-1G", "512K", "1 T"])
def test_bad_or_tiny_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_size(text)


def test_off_a_terminal_each_phase_and_each_finished_step_is_one_line() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream)
    for event in [Progress(0, 1, "creating scratch images"), Progress(0, 2, "round 1/1: raw"),
                  Progress(1, 2, "round 1/1: raw: 10 IOPS"), Progress(1, 2, "round 1/1: qcow2-auto"),
                  Progress(2, 2, "round 1/1: qcow2-auto: 9 IOPS")]:
        display(event)
    display.close()
    assert stream.getvalue().splitlines() == [
        "[0/1] creating scratch images", "[0/2] round 1/1: raw", "[1/2] round 1/1: raw: 10 IOPS",
        "[2/2] round 1/1: qcow2-auto: 9 IOPS"]
