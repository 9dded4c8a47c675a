"""`qdisk cache plan` and `qdisk cache explain`: what QEMU does with an image's cache."""

from __future__ import annotations

from typing import Any

import click

from qdisk.cache import (
    QEMU_OPTION_NAMES,
    EffectiveCache,
    NodePlan,
    QemuCacheError,
    advise,
    coverage_percent,
    effective_cache,
    host_allocation_limit,
    memory,
    parse_cache_options,
    plan_chain,
)
from qdisk.cli.common import echo_json, fail_json, pass_settings
from qdisk.errors import InvalidInputError
from qdisk.image.info import read_chain, read_image
from qdisk.settings import Settings
from qdisk.system.tools import qemu_version
from qdisk.units import format_bytes


@click.group(name="cache")
def command() -> None:
    """Plan and explain the qcow2 metadata cache of an image."""


@command.command(name="plan")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@click.argument("path")
@pass_settings
@click.pass_context
def plan(ctx: click.Context, settings: Settings, as_json: bool, path: str) -> None:
    """The auto size, QEMU's default and advice for every qcow2 image of PATH's chain."""
    try:
        # The top must be qcow2 (a raw image has no cache), the images below it need not.
        plans = plan_chain(read_chain(path, format="qcow2", tools=settings.tools))
    except InvalidInputError as error:
        if as_json:
            fail_json(ctx, error)
        raise
    if as_json:
        echo_json({"nodes": [_plan_json(node) for node in plans]})
        return
    click.echo("\n\n".join(_plan_text(node) for node in plans))


def _plan_json(node: NodePlan) -> dict[str, Any]:
    image, default = node.image, node.default
    return {
        "filename": image.filename,
        "virtual-size": image.virtual_size,
        "cluster-size": image.cluster_size,
        "refcount-bits": image.refcount_bits,
        "extended-l2": image.extended_l2,
        "auto": {"cache-size": node.auto.cache_size, "l2-cache-size": node.auto.l2_cache_size,
                 "refcount-cache-size": node.auto.refcount_cache_size},
        "default": {"l2-cache-size": default.l2_cache_size,
                    "refcount-cache-size": default.refcount_cache_size,
                    "l2-cache-entry-size": default.l2_cache_entry_size,
                    "l2-coverage": default.l2_coverage},
        "needed-l2-cache-size": default.needed_l2_cache_size,
        "proxmox-ve": {"cache-size": memory(node.proxmox_cache),
                       "l2-cache-size": node.proxmox_cache.l2_cache_size,
                       "refcount-cache-size": node.proxmox_cache.refcount_cache_size,
                       "l2-coverage": node.proxmox_cache.l2_coverage},
        "memory": {"auto": memory(node.auto_cache), "proxmox-ve": memory(node.proxmox_cache),
                   "default": memory(default)},
        "internal-snapshots": image.header.nb_snapshots if image.header is not None else None,
        "advice": list(node.advice),
    }


def _plan_text(node: NodePlan) -> str:
    image, default, auto = node.image, node.default, node.auto
    lines = [f"{image.filename}: qcow2, {format_bytes(image.virtual_size)}, clusters of "
             f"{format_bytes(image.cluster_size or 0)}, {image.refcount_bits}-bit refcounts"
             + (", extended L2" if image.extended_l2 else ""),
             f"  auto:    cache-size {format_bytes(auto.cache_size)} (L2 "
             f"{format_bytes(auto.l2_cache_size)} + refcount "
             f"{format_bytes(auto.refcount_cache_size)})",
             f"  default: {_cache_summary(default)}",
             f"  needs:   L2 {format_bytes(default.needed_l2_cache_size)} to cover the disk",
             f"  Proxmox VE (the top image's size on every layer): {_cache_summary(node.proxmox_cache)}",
             f"  memory:  auto {format_bytes(memory(node.auto_cache))}, Proxmox VE "
             f"{format_bytes(memory(node.proxmox_cache))}, default {format_bytes(memory(default))}"]
    lines += [f"  - {note}" for note in node.advice]
    return "\n".join(lines)


def _cache_summary(cache: EffectiveCache) -> str:
    return (f"L2 {format_bytes(cache.l2_cache_size)} in entries of "
            f"{format_bytes(cache.l2_cache_entry_size)}, refcount "
            f"{format_bytes(cache.refcount_cache_size)}, covers "
            f"{format_bytes(cache.l2_coverage)} ({coverage_percent(cache):.0f}%)")


def _parse_settings(_ctx: click.Context, _param: click.Parameter,
                    values: tuple[str, ...]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for item in values:
        option, separator, value = item.partition("=")
        if not separator:
            raise click.BadParameter(f"{item!r} is not OPTION=VALUE (OPTION one of "
                                     f"{', '.join(QEMU_OPTION_NAMES)})")
        # An unknown OPTION is left to parse_cache_options: QEMU's own message.
        if option in settings:
            raise click.BadParameter(f"{option} is given twice")
        settings[option] = value
    return settings


@command.command(name="explain")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@click.option("--set", "settings_text", multiple=True, metavar="OPTION=VALUE",
              callback=_parse_settings,
              help="A qcow2 cache option in QEMU's name and syntax (bytes, suffixes k M G T).")
@click.argument("path")
@pass_settings
@click.pass_context
def explain(ctx: click.Context, settings: Settings, as_json: bool,
            settings_text: dict[str, str], path: str) -> None:
    """What QEMU would use for the top image of PATH with these options, or QEMU's error."""
    try:
        image = read_image(path, format="qcow2", tools=settings.tools)
        options = parse_cache_options(settings_text, lambda: qemu_version(settings.tools.qemu_img))
        cache = effective_cache(image, options, allocation_limit=host_allocation_limit())
    except QemuCacheError as error:
        if as_json:
            fail_json(ctx, error, error.qemu_message)
        raise
    except InvalidInputError as error:
        if as_json:
            fail_json(ctx, error)
        raise
    advice = advise(image, options, cache)
    if as_json:
        echo_json({"filename": image.filename,
                   "l2-cache-size": cache.l2_cache_size,
                   "refcount-cache-size": cache.refcount_cache_size,
                   "l2-cache-entry-size": cache.l2_cache_entry_size,
                   "l2-coverage": cache.l2_coverage,
                   "cache-clean-interval": cache.cache_clean_interval,
                   "l2-cache-entries": cache.l2_cache_entries,
                   "refcount-cache-entries": cache.refcount_cache_entries,
                   "needed-l2-cache-size": cache.needed_l2_cache_size,
                   "advice": advice})
        return
    click.echo("\n".join([
        f"{image.filename}: {', '.join(f'{k}={v}' for k, v in settings_text.items()) or 'defaults'}",
        f"  l2-cache-size:        {cache.l2_cache_size} ({cache.l2_cache_entries} entries of "
        f"{cache.l2_cache_entry_size} bytes)",
        f"  refcount-cache-size:  {cache.refcount_cache_size} ({cache.refcount_cache_entries} "
        "clusters)",
        f"  l2-cache-entry-size:  {cache.l2_cache_entry_size}",
        f"  l2-coverage:          {cache.l2_coverage} ({format_bytes(cache.l2_coverage)}, "
        f"{coverage_percent(cache):.0f}% of the disk)",
        f"  cache-clean-interval: {cache.cache_clean_interval}",
        *(f"  - {note}" for note in advice)]))
