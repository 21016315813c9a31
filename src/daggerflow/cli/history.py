"""``daggerflow history ID``: what happened to a workflow, as a table (or ``--json``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .client import ClientCommand, call_worker, expect, json_option, print_json, styled_status, url_option
from .group import cli, console


def _names(url: str, path: str) -> dict[str, str]:
    """Node id -> task name, from the instance's snapshot (ids are UUIDs)."""
    snap = expect(call_worker("GET", url, path), url, dict, "id", "tasks")
    names = {snap["id"]: snap.get("task_name") or snap["id"]}
    for node_id, task in snap["tasks"].items():
        names[node_id] = task.get("task_name") or node_id
    return names


def _detail(item: dict[str, Any]) -> str:
    parts = []
    if item.get("job"):
        parts.append(f"{item['job']}()")
    if item.get("attempt") is not None:
        parts.append(f"attempt {item['attempt']}")
    if item.get("topic"):
        where = item["topic"]
        if item.get("partition") is not None:
            where += f"[{item['partition']}]"
        if item.get("offset") is not None:
            where += f"@{item['offset']}"
        parts.append(where)
    if item.get("detail"):
        parts.append(item["detail"])
    if item.get("actor"):
        parts.append(f"by {item['actor']}")
    text = escape(", ".join(parts))
    if item.get("error"):
        text += (", " if text else "") + f"[red]{escape(item['error'])}[/]"
    return text


@cli.command(cls=ClientCommand)
@click.argument("instance_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Entries per page.")
@click.option("--after", type=click.IntRange(min=-1), default=-1, help="Only entries after this seq (a page's next).")
@url_option
@json_option
def history(instance_id: str, limit: int, after: int, url: str, as_json: bool) -> None:
    """What happened to workflow INSTANCE_ID, oldest first: each event and the status
    changes it caused."""
    path = f"/api/v1/instances/{quote(instance_id, safe='')}"
    page = expect(call_worker("GET", url, path + "/history", params={"limit": limit, "after": after}),
                  url, dict, "items", "next")  # fmt: skip
    if as_json:
        print_json(page)
        return
    names = _names(url, path)
    table = Table(title=f"history of {escape(instance_id)}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("seq", "time", "event", "task"):
        table.add_column(column, no_wrap=True)
    table.add_column("status changes")
    table.add_column("detail")
    for item in page["items"]:
        if item["event"] == "dropped":
            table.add_row(str(item["seq"]), "", "[dim]dropped[/]", "",
                          f"[dim]{item['dropped']} older entries dropped (history_limit)[/]", "")  # fmt: skip
            continue
        changes = "\n".join(
            f"{escape(names.get(c['node'], c['node']))}: {styled_status(c['from'])} -> {styled_status(c['to'])}"
            for c in item.get("changes", [])
        )
        node = item.get("node")
        table.add_row(str(item["seq"]), _time(item["time"]), item["event"],
                      escape(names.get(node, node)) if node else "", changes, _detail(item))  # fmt: skip
    console.print(table)
    if page["next"] is not None:
        console.print(f"more: daggerflow history {escape(instance_id)} --after {page['next']}")


def _time(epoch: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}"
