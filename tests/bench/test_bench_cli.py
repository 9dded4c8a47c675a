"""The CLI's own parts: sizes, and progress on and off a terminal."""

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


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no descriptor")  # no size known: 80 columns


def test_on_a_terminal_one_line_shows_what_runs_now_and_ends_with_a_newline() -> None:
    stream = FakeTerminal()
    display = ProgressDisplay(stream)
    display(Progress(0, 4, "round 1/2: raw"))
    assert stream.getvalue() == "\r\x1b[K[--------------------] 0/4 round 1/2: raw"
    display(Progress(1, 4, "round 1/2: raw: 10 IOPS"))
    display(Progress(1, 4, "round 1/2: qcow2-auto " + "x" * 100))
    display.close()
    display.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    last = text.rstrip("\n").split("\r\x1b[K")[-1]
    assert last.startswith("[#####---------------] 1/4 round 1/2: qcow2-auto x")
    assert len(last) == 79  # cut to the terminal: a wrapped line could not be rewritten


def test_nothing_is_written_to_a_terminal_without_progress() -> None:
    stream = FakeTerminal()
    ProgressDisplay(stream).close()
    assert stream.getvalue() == ""
