"""QMP through the official ``qemu.qmp`` library, behind a small synchronous facade.

qdisk's commands are short-lived and synchronous, so each connection runs its own
event loop; callers see plain method calls and :class:`QmpError` subclasses that
carry QEMU's own message and keep the library's exception as their cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, TypeVar

from qemu.qmp import ExecuteError, Message, QMPClient, QMPError, Runstate

from qdisk.errors import QdiskError

T = TypeVar("T")


class QmpError(QdiskError):
    """QEMU's monitor could not be reached or answered with an error."""


class QmpBusyError(QmpError):
    """QEMU's monitor did not greet in time: another client holds it (or QEMU hangs)."""


class QmpCommandError(QmpError):
    """QEMU refused a command; ``desc`` is QEMU's message."""

    def __init__(self, command: str, desc: str) -> None:
        super().__init__(f"QEMU refused {command}: {desc}")
        self.command = command
        self.desc = desc


class _SessionClient(QMPClient):
    """``QMPClient`` that reads past what is not its own while the session is set up.

    qemu.qmp 0.0.6 takes the first message after connecting as the greeting and the next
    as the capabilities reply. QEMU 7.2 sends events around both: the monitor stays in
    command mode after the previous client leaves until the new one's greeting, and
    ``qmp_capabilities`` switches it back before its reply is written. A block job left
    running by a killed qdisk thus failed the next connection ("Negotiation failed", "Did
    not understand Greeting"). qdisk polls rather than listens, so such events are dropped;
    so is a reply carrying an id (the negotiation sends none): a previous client's answer,
    which QMP says to drop.
    """

    async def _recv(self) -> Message:
        message: Message = await super()._recv()
        while self.runstate == Runstate.CONNECTING and ("event" in message or "id" in message):
            self.logger.debug("Not ours while connecting, dropped: %s", message)
            message = await super()._recv()
        return message


class QmpConnection:
    """``with QmpConnection(socket) as qmp: qmp.execute("query-status")``."""

    def __init__(self, socket_path: Path, *, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._client = _SessionClient(f"qdisk:{socket_path.name}")

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout))
        except Exception:
            raise
        except BaseException:
            # Interrupted (a signal ends the command): no task may stay pending in the loop,
            # or asyncio complains on stderr when the process exits.
            self._abandon()
            raise

    def _abandon(self) -> None:
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> QmpConnection:
        try:
            self._run(self._client.connect(str(self.socket_path)))
        except asyncio.TimeoutError as error:
            self._loop.close()
            # QEMU serves one client per monitor: others wait, ungreeted, in the backlog.
            raise QmpBusyError(f"QEMU's monitor at {self.socket_path} is busy: no greeting within "
                           f"{self.timeout:g} s (another client, such as qemu-server, holds it, "
                           "or QEMU hangs)") from error
        except (OSError, QMPError) as error:
            self._loop.close()
            raise QmpError(f"cannot connect to QEMU's monitor at {self.socket_path}: "
                           f"{_reason(error, self.timeout)}") from error
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop.is_closed():
            return  # abandoned when a signal interrupted a command
        try:
            self._run(self._client.disconnect())
        except (OSError, EOFError, QMPError, asyncio.TimeoutError):
            pass  # QEMU may already be gone (after "quit"): nothing left to close.
        finally:
            self._loop.close()

    def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        try:
            return self._run(self._client.execute(command, arguments))
        except ExecuteError as error:
            raise QmpCommandError(command, str(error)) from error
        except (OSError, EOFError, QMPError, asyncio.TimeoutError) as error:
            # EOFError: QEMU closed the monitor (it exited, or was killed).
            raise QmpError(f"QEMU's monitor at {self.socket_path} failed during {command}: "
                           f"{_reason(error, self.timeout)}") from error


def _reason(error: BaseException, timeout: float) -> str:
    """An exception's message, or its kind when it has none (a timeout says nothing)."""
    if isinstance(error, asyncio.TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(error) or type(error).__name__
