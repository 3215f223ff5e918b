"""``conslaw count ARCH ...``: the number of independent laws of a catalog block (Thm 2.11)."""

from __future__ import annotations

import click

from ..catalog import Architecture
from ..count import CountResult, count
from .common import (
    BLOCK_OPTION,
    CONTEXT,
    FIELDS_OPTION,
    INIT_OPTION,
    JSON_OPTION,
    RESIDUAL_OPTION,
    SEED_OPTION,
    compose,
    echo_json,
    load_theta,
    parse_block,
    progress_wanted,
    register_arch_commands,
)

#: options of every ``count`` form
count_options = compose(
    click.option("--flow", type=click.Choice(["gradient", "sign"]), default="gradient", show_default=True,
                 help="gradient flow (eq. 4) or sign/Adam flow (eq. 12)"),
    FIELDS_OPTION, INIT_OPTION, SEED_OPTION,
    click.option("--theta", "theta_file", type=click.Path(dir_okay=False), default=None,
                 help="evaluate at this theta (.npy, .json list or whitespace-separated text of D numbers)"),
    RESIDUAL_OPTION, BLOCK_OPTION,
    click.option("--rtol", type=float, default=1e-8, show_default=True, help="relative rank threshold in (0, 1)"),
    click.option("--show-laws", is_flag=True, help="list the catalog's closed-form laws"),
    click.option("--max-memory", type=float, default=None, metavar="GB",
                 help="refuse counts estimated to need more memory than this (default: the memory available now)"),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="intra-op threads (default: 1 below D = 1024, else the cores not busy; env CONSLAW_THREADS)"),
    JSON_OPTION)


def format_count(result: CountResult, data: dict) -> str:
    """The human-readable report of one count."""
    lines = [f"{result.arch.label}   (fields: {data['fields']}, flow: {data['flow']}, "
             f"init: {data['init']}, seed: {data['seed']})",
             f"  parameters D                      {data['D']}"]
    levels = "  ".join(f"{lv['level']}:+{lv['added']}" for lv in data["levels"])
    lines.append(f"  dim Lie(W)(theta)                 {data['lie_dim']}   "
                 f"(levels {levels}{', saturated' if data['saturated'] else ''})")
    lines.append(f"  conservation laws (D - dim Lie)   {data['num_laws']}")
    if data["known_laws"] is None:
        lines.append("  catalog closed forms              none for this flow")
    else:
        res = data["max_law_residual"]
        lines.append(f"  catalog closed forms              {data['known_laws']} independent"
                     + (f"   (max residual {res:.1e})" if res is not None else ""))
    if data["expected"] is not None:
        lines.append(f"  paper                             {data['expected']}   ({data['expected_source']})")
    gap = data["spectral_gap"]
    lines.append(f"  spectral gap                      {'exact zeros' if gap is None else f'{gap:.2e}'}")
    lines.append(f"  time                              {data['seconds']:.2f} s")
    for law in data.get("laws", []):
        lines.append(f"    {law['name']}:  {law['formula']}")
    lines += [f"  note: {n}" for n in data["notes"]] + [f"  warning: {w}" for w in data["warnings"]]
    return "\n".join(lines)


def run_count(arch: Architecture, flow, fields, init, seed, theta_file, block, rtol, show_laws, max_memory,
              threads, as_json):
    """Count, then print the report or the JSON object."""
    result = count(arch, fields=fields, flow=flow, init=init, seed=seed, theta=load_theta(theta_file),
                   rtol=rtol, block=parse_block(block), progress=progress_wanted(as_json), max_memory=max_memory,
                   threads=threads)
    data = result.as_dict()
    if show_laws:
        laws = arch.law_set(flow)
        data["laws"] = [] if laws is None else [law.as_dict() for law in laws]
    if as_json:
        echo_json(data)
    else:
        click.echo(format_count(result, data))


@click.group("count", context_settings=CONTEXT)
def count_cmd():
    """Count the independent conservation laws of a building block (Thm 2.11)."""


register_arch_commands(count_cmd, count_options, run_count)
