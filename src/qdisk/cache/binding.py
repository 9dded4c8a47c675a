"""A drive's ``qcow2-*`` keys bound to its image: the options QEMU gets (the auto size
from the image's own header), and the problems only the image reveals."""

from __future__ import annotations

from typing import Protocol

from qdisk.cache.model import (
    MIN_ENTRY_BYTES,
    CacheOptions,
    QemuCacheError,
    auto_size_or_fallback,
    effective_cache,
)
from qdisk.cache.options import AUTO_SIZE_KEY, BY_QEMU_NAME, QEMU_OPTIONS
from qdisk.errors import Problem
from qdisk.image.info import DataFileError, ImageInfo, refuse_external_data_file


class CacheDrive(Protocol):
    """What this module needs of a ``qdisk.config.drive.Drive``."""

    @property
    def key(self) -> str: ...

    def get(self, name: str) -> bool | int | float | str | None: ...


def drive_cache_options(drive: CacheDrive) -> CacheOptions:
    """The drive's explicit ``qcow2-*`` keys in QEMU's units (MiB -> bytes)."""
    values: dict[str, int] = {}
    for option in QEMU_OPTIONS:
        value = drive.get(option.drive_key)
        if option.field is not None and value is not None and not isinstance(value, bool):
            values[option.field] = int(value) * option.factor
    return CacheOptions(**values)


def uses_auto_size(drive: CacheDrive) -> bool:
    return drive.get(AUTO_SIZE_KEY) is True


def resolved_cache_options(drive: CacheDrive, image: ImageInfo | None,
                           configured_size: int | None = None) -> tuple[CacheOptions, list[str]]:
    """The options QEMU gets for the drive's top image: explicit keys, plus ``cache-size``
    from the auto size when ``qcow2-cache-size-based-on-disk`` is on; and warnings."""
    options = drive_cache_options(drive)
    if not uses_auto_size(drive):
        return options, []
    auto, warnings = auto_size_or_fallback(image, configured_size, drive.key)
    return options.replace(cache_size=auto.cache_size), warnings


def check_drive_cache(drive: CacheDrive, image: ImageInfo) -> list[Problem]:
    """Problems of the drive that only its image reveals, as ``Problem``s for a
    ``DriveError``: an external data file (refused), and of its cache keys the entry size
    against the cluster size and QEMU's refusals.

    Other formats ignore the keys (the caller warns, as qemu-server does): no problem here.
    """
    try:
        refuse_external_data_file(image)
    except DataFileError as error:
        return [Problem("file", str(error))]
    if not image.is_qcow2:
        return []
    options, _warnings = resolved_cache_options(drive, image)
    try:
        effective_cache(image, options)
    except QemuCacheError as error:
        return [Problem(BY_QEMU_NAME[error.option].drive_key,
                        _drive_message(error, image, options))]
    return []


def _drive_message(error: QemuCacheError, image: ImageInfo, options: CacheOptions) -> str:
    qemu_message = error.qemu_message
    if error.option == "l2-cache-entry-size":
        return (f"value {options.l2_cache_entry_size} must be a power of two between "
                f"{MIN_ENTRY_BYTES} and the cluster size of {image.filename} "
                f"({image.cluster_size}): QEMU refuses it")
    return f"QEMU refuses the cache options of {image.filename}: {qemu_message}"
