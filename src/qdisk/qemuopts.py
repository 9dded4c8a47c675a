"""QEMU's ``key=value,...`` option syntax (``-drive``, ``-chardev``, ``qemu-img -o``): a
comma inside a value is doubled."""

from __future__ import annotations


def escape(value: str) -> str:
    """A value for QEMU's ``key=value,...`` syntax: ``,`` doubled."""
    return value.replace(",", ",,")


def unescape(value: str) -> str:
    """The value a ``key=value,...`` option list holds (``,,`` read as ``,``)."""
    return value.replace(",,", ",")


def option_value(value: str | int | bool) -> str:
    """A typed value in QEMU's option syntax: booleans ``on``/``off``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return escape(str(value))
