"""Helpers of the QEMU command area: a QDISK_HOME with storages and images, and real QEMU
processes that check generated arguments (subprocess.run always reaps them)."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk.qemu.command import VmCommand
from qdisk.qemu.nodes import Node
from qdisk.settings import Settings, Tools

HERE = Path(__file__).parent
GOLDEN_DIR = HERE / "cfg2cmd"
VMID = 8006
QEMU_TIMEOUT = 60


def walk(node: Node) -> Iterator[Node]:
    """The node and every node below it (file, then backing), depth first."""
    yield node
    for child in ("file", "backing"):
        if isinstance(node.get(child), dict):
            yield from walk(node[child])


@dataclass(frozen=True)
class QemuHome:
    """A QDISK_HOME (``home``) whose storages live under ``storage``; ``root`` is replaced
    by ``/TMP`` in golden comparisons."""

    root: Path
    home: Path
    storage: Path

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home, tools=Tools())

    def write_config(self, text: str, vmid: int = VMID) -> None:
        path = self.home / "qemu-server" / f"{vmid}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def normalise(self, text: str) -> str:
        return text.replace(str(self.root), "/TMP")

    def create_image(self, relative: str, size: str, *options: str) -> Path:
        """``qemu-img create`` of ``storage/relative`` (format from the extension)."""
        path = self.storage / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = path.suffix.lstrip(".")
        fmt = "raw" if fmt in ("iso", "img") else fmt
        result = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), size],
                                capture_output=True, text=True, cwd=path.parent)
        assert result.returncode == 0, result.stderr
        return path


def qmp_stdio(argv: Sequence[str], commands: Sequence[dict[str, Any]]) -> list[Any]:
    """Run a QEMU program with a QMP monitor on stdin/stdout, send ``commands`` then quit;
    returns each command's ``return``. Fails the test with QEMU's stderr if it refuses the
    arguments. subprocess.run kills and reaps the process on timeout."""
    script = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    result = subprocess.run(list(argv), input="".join(json.dumps(c) + "\n" for c in script),
                            capture_output=True, text=True, timeout=QEMU_TIMEOUT)
    replies = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    answers = [reply for reply in replies if "return" in reply or "error" in reply]
    assert result.returncode == 0 and len(answers) == len(script), (
        f"QEMU refused: {result.stderr.strip()}\ncommand: {shlex.join(argv)}")
    errors = [answer["error"] for answer in answers if "error" in answer]
    assert not errors, errors
    return [answer["return"] for answer in answers[1:-1]]


NODES_QUERY = {"execute": "query-named-block-nodes", "arguments": {"flat": True}}


def storage_daemon_nodes(objects: Sequence[str], blockdevs: Sequence[str]) -> list[dict[str, Any]]:
    """qemu-storage-daemon opens every ``--object`` and ``--blockdev``; its named nodes."""
    argv = ["qemu-storage-daemon", "--chardev", "stdio,id=qmp0", "--monitor", "chardev=qmp0"]
    for obj in objects:
        argv += ["--object", obj]
    for blockdev in blockdevs:
        argv += ["--blockdev", blockdev]
    return list(qmp_stdio(argv, [NODES_QUERY])[0])


def drive_set_nodes(drives: Sequence[str]) -> list[dict[str, Any]]:
    """``qemu-system -machine none`` opens every ``-drive``; its named nodes."""
    argv = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S",
            "-qmp", "stdio"]
    for drive in drives:
        argv += ["-drive", drive]
    return list(qmp_stdio(argv, [NODES_QUERY])[0])


def iter_node_names(command: VmCommand) -> Iterator[tuple[str, str]]:
    """(drive key, node name) of every node the command creates, for checks over QMP."""
    for key, graph in command.graphs.items():
        if graph.top is None:
            continue
        nodes = walk(graph.top) if command.syntax == "blockdev" else walk(graph.top["file"])
        for node in nodes:
            yield key, node["node-name"]
