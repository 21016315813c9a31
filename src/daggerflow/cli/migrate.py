"""``daggerflow migrate``: move running instances of a template to the version a running
worker registers (``POST /api/v1/migrations``), or, with ``--dry-run``, report what would
happen to each."""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.table import Table

from .client import ClientCommand, call_worker, expect, json_option, print_json, url_option
from .group import cli, console


def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict (a usage error names the bad one)."""
    out: dict[str, str] = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint=option)
        if name in out:
            raise click.BadParameter(f"{name} is given twice", param_hint=option)
        out[name] = value
    return out


@cli.command(cls=ClientCommand)
@click.option("--template", "-t", required=True, help="The template's name.")
@click.option("--from", "from_version", required=True, metavar="VERSION", help="The version the instances are at.")
@click.option("--to", "to_version", metavar="VERSION", help="The target version (default: the registered one).")
@click.option("--map", "node_map", multiple=True, metavar="OLD=NEW", help="An old node name -> its new name.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only matching instances (the listing's filters, e.g. param.order_id=o1).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@url_option
@json_option
def migrate(
    template: str,
    from_version: str,
    to_version: str | None,
    node_map: tuple[str, ...],
    filters: tuple[str, ...],
    dry_run: bool,
    url: str,
    as_json: bool,
) -> None:
    """Move the running instances of TEMPLATE at version --from to another version: node states
    carry over by name (or --map), new nodes start NOT_STARTED, unsafe instances are refused."""
    body: dict[str, Any] = {
        "template": template,
        "from_version": from_version,
        "node_map": pairs(node_map, "--map"),
        "filter": pairs(filters, "--filter"),
        "dry_run": dry_run,
    }
    if to_version is not None:
        body["to_version"] = to_version
    report = expect(
        call_worker("POST", url, "/api/v1/migrations", params={"actor": "cli"}, json=body),
        url, dict, "matched", "instances",
    )  # fmt: skip
    if as_json:
        print_json(report)
        return
    verb = "would migrate" if report["dry_run"] else "migrated"
    table = Table(title=f"{template} {report['from_version']} -> {report['to_version']}", box=box.SIMPLE_HEAD)
    table.add_column("instance")
    table.add_column("action")
    table.add_column("reason")
    for item in report["instances"]:
        table.add_row(item["id"], item["action"], item.get("reason") or "")
    console.print(table)
    console.print(f"{report['matched']} matched: {verb} {report['migrated']}, refused {report['refused']}")
