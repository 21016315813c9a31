"""The REST client commands: ``instances``, ``instance``, ``templates``, ``send``, ``create``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table

from ..model.query import DEFAULT_SORT, FILTER_NAMES, PARAM_PREFIX, SORTS
from .client import (
    ClientCommand,
    call_worker,
    expect,
    format_time,
    json_option,
    print_json,
    styled_status,
    url_option,
)
from .group import cli, console
from .params import runtime_parameters

if TYPE_CHECKING:

    pass


def filter_params(filters: tuple[str, ...]) -> list[tuple[str, str]]:
    """``--filter NAME=VALUE`` options as query parameters: a NAME of the listing's filters
    (status, template, version, waiting_on, correlation, created_after, created_before,
    updated_after) or any other NAME, which is a runtime parameter (``param.NAME``)."""
    out: list[tuple[str, str]] = []
    for item in filters:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--filter")
        if not name.startswith(PARAM_PREFIX) and name not in FILTER_NAMES:
            name = PARAM_PREFIX + name
        out.append((name, value))
    return out


@cli.command(cls=ClientCommand)
@click.option("--status", help="Only this status (COMPLETED, FAILURE, EXECUTING, ...).")
@click.option("--template", help="Only instances of this template.")
@click.option(
    "--filter", "-f", "filters", multiple=True, metavar="NAME=VALUE",
    help="Only instances with runtime parameter NAME equal to VALUE (or param.NAME=VALUE), or a named "
    "filter: waiting_on=TOPIC, correlation=VALUE, version=V, created_after=T, created_before=T, "
    "updated_after=T (epoch seconds or ISO-8601). Repeatable: all must hold.",
)  # fmt: skip
@click.option("--sort", type=click.Choice(SORTS), default=DEFAULT_SORT, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@url_option
@json_option
def instances(
    status: str | None, template: str | None, filters: tuple[str, ...], sort: str, limit: int, offset: int,
    url: str, as_json: bool,
) -> None:  # fmt: skip
    """List (and search) workflow instances of a running worker, newest first (pages via --offset).

    Example: daggerflow instances --filter customer_id=c1 --filter waiting_on=pizza_ready
    """
    params: list[tuple[str, Any]] = [("limit", limit), ("offset", offset), ("sort", sort)]
    if status:
        params.append(("status", status))
    if template:
        params.append(("template", template))
    params.extend(filter_params(filters))
    page = expect(call_worker("GET", url, "/api/v1/instances", params=params), url, dict, "items", "total", "offset")
    if as_json:
        print_json(page)
        return
    table = Table(title=f"workflow instances at {url}", box=box.SIMPLE_HEAD, pad_edge=False)
    # The id and the status never shrink; the other columns give way in narrow terminals.
    longest_id = max((len(item["id"]) for item in page["items"]), default=2)
    table.add_column("id", no_wrap=True, min_width=longest_id)
    table.add_column("status", no_wrap=True, min_width=len("NOT_STARTED"))
    for column in ("template", "created", "took"):
        table.add_column(column, no_wrap=True)
    for item in page["items"]:
        created, completed = item.get("time_created"), item.get("time_completed")
        took = f"{completed - created:.3f} s" if created and completed else "-"
        table.add_row(
            item["id"], styled_status(item["status"]["code"]), item["template_name"], format_time(created), took
        )
    console.print(table)
    shown = len(page["items"])
    first = page["offset"] + 1 if shown else page["offset"]
    more = f"; next: --offset {page['next_offset']}" if page.get("next_offset") is not None else ""
    console.print(f"{first}-{page['offset'] + shown} of {page['total']}{more}")


cli.add_command(instances, name="list")


@cli.command(cls=ClientCommand)
@click.argument("instance_id")
@url_option
def instance(instance_id: str, url: str) -> None:
    """Print one workflow instance (all its tasks) as JSON."""
    from urllib.parse import quote

    found = call_worker("GET", url, f"/api/v1/instances/{quote(instance_id, safe='')}")
    print_json(expect(found, url, dict, "id", "status"))


@cli.command(cls=ClientCommand)
@url_option
@json_option
def templates(url: str, as_json: bool) -> None:
    """List every version of every workflow template, with its running instances."""
    found = expect(call_worker("GET", url, "/api/v1/templates"), url, list)
    if as_json:
        print_json(found)
        return
    table = Table(title=f"templates at {url}", box=box.SIMPLE_HEAD)
    table.add_column("name")
    table.add_column("version")
    table.add_column("current")
    table.add_column("running", justify="right")
    table.add_column("missing")
    for t in found:
        missing = [*t.get("missing_task_types", []), *(f"topic {x}" for x in t.get("missing_topics", []))]
        table.add_row(t["name"], t["version"], "yes" if t.get("current") else "", str(t.get("running", 0)),
                      ", ".join(missing))  # fmt: skip
    console.print(table)


@cli.command(cls=ClientCommand)
@click.argument("topic")
@click.argument("value")
@click.option("--key", "-k", help="Message key.")
@url_option
@json_option
def send(topic: str, value: str, key: str | None, url: str, as_json: bool) -> None:
    """Append VALUE (sent as the string given, e.g. JSON text) to TOPIC of a running worker."""
    from urllib.parse import quote

    result = call_worker(
        "POST", url, f"/topics/{quote(topic, safe='')}/messages", json={"key": key, "value": value}
    )
    expect(result, url, dict, "topic", "offset")
    if as_json:
        print_json(result)
    else:
        console.print(f"sent to {result['topic']} at offset {result['offset']}")


@cli.command(cls=ClientCommand)
@click.argument("template")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A string parameter.")
@click.option("--params", "params_json", metavar="JSON", help="Runtime parameters as a JSON object.")
@click.option("--id", "instance_id", help="Instance id (default: a new UUID).")
@click.option("--no-submit", is_flag=True, help="Create NOT_STARTED instead of starting it.")
@url_option
@json_option
def create(
    template: str,
    params: tuple[str, ...],
    params_json: str | None,
    instance_id: str | None,
    no_submit: bool,
    url: str,
    as_json: bool,
) -> None:
    """Create (and start) an instance of TEMPLATE on a running worker.

    Example: daggerflow create PizzaWorkflow -p order_id=1 -p customer_id=c1 --params '{"pizza_type": 1}'
    """
    from urllib.parse import quote

    runtime = runtime_parameters(params_json, params, json_values=False)
    body: dict[str, Any] = {"runtime_parameters": runtime, "submit": not no_submit}
    if instance_id is not None:
        body["id"] = instance_id
    created = call_worker("POST", url, f"/api/v1/templates/{quote(template, safe='')}/instances", json=body)
    expect(created, url, dict, "id", "status")
    if as_json:
        print_json(created)
    else:
        console.print(f"created {created['id']} ({styled_status(created['status']['code'])})")
