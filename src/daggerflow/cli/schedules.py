"""``daggerflow schedules``: list (the default), add, delete, pause and resume the schedules of
a running worker, through its REST API (``/api/v1/schedules``, as actor ``cli``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich import box
from rich.table import Table

from .client import ClientCommand, call_worker, expect, json_option, print_json, url_option
from .group import cli, console
from .params import runtime_parameters

_ACTOR = {"actor": "cli"}


def _path(name: str) -> str:
    return f"/api/v1/schedules/{quote(name, safe='')}"


def _when(item: dict[str, Any]) -> str:
    return f"cron {item['cron']} ({item['timezone']})" if item.get("cron") else f"every {item['every']} s"


def _show(item: dict[str, Any], done: str, as_json: bool) -> None:
    if as_json:
        print_json(item)
        return
    state = "paused" if item["paused"] else "next " + (item["next_fire_times"] or ["-"])[0]
    console.print(f"{done} {item['name']}: {_when(item)}, {state}", highlight=False)


def _list(url: str, as_json: bool) -> None:
    page = expect(call_worker("GET", url, "/api/v1/schedules"), url, dict, "items")
    if as_json:
        print_json(page)
        return
    table = Table(title=f"schedules at {url}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("name", "template", "when", "catch up", "state", "next fire", "last fired", "fired"):
        table.add_column(column, no_wrap=column in ("name", "state"))
    for item in page["items"]:
        state = "[yellow]paused[/]" if item["paused"] else "[green]active[/]"
        if item.get("last_error"):
            state += " [red](error)[/]"
        table.add_row(item["name"], item["template"], _when(item), item["catch_up"], state,
                      (item["next_fire_times"] or ["-"])[0], item.get("last_fired") or "-", str(item["fired"]))  # fmt: skip
    console.print(table)
    console.print(f"{len(page['items'])} schedule(s)")


class _Group(click.Group):
    """``schedules`` alone lists them; a wrong-shaped answer is one line, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyError, TypeError, AttributeError, IndexError):
            from .client import _not_daggerflow

            _not_daggerflow(ctx.params.get("url", ""))


@cli.group(cls=_Group, invoke_without_command=True)
@url_option
@json_option
@click.pass_context
def schedules(ctx: click.Context, url: str, as_json: bool) -> None:
    """The schedules of a running worker: list (the default), add, delete, pause, resume."""
    if ctx.invoked_subcommand is None:
        _list(url, as_json)


@schedules.command("list", cls=ClientCommand)
@url_option
@json_option
def list_(url: str, as_json: bool) -> None:
    """Every schedule with its next fire time, paused flag and last fired tick."""
    _list(url, as_json)


def _params(values: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    return runtime_parameters(params_json, values, json_values=True)


@schedules.command(cls=ClientCommand)
@click.argument("name")
@click.argument("template")
@click.option("--cron", help="A five-field cron expression, e.g. '*/5 * * * *' (read in --timezone).")
@click.option("--every", type=click.IntRange(min=1), metavar="SECONDS", help="Seconds between ticks.")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="The IANA time zone of --cron.")
@click.option("--catch-up", type=click.Choice(["skip", "one", "all"]), default="skip", show_default=True,
              help="Ticks missed while no worker ran it: skip them, fire the latest, or all (at most 100).")  # fmt: skip
@click.option("--param", "param_values", multiple=True, metavar="NAME=VALUE",
              help="A runtime parameter of each instance (VALUE as JSON, else text); repeatable.")  # fmt: skip
@click.option("--params", "params_json", metavar="JSON", help="The runtime parameters as a JSON object.")
@click.option("--paused/--active", default=None, help="Create it paused (or resume it).")
@url_option
@json_option
def add(name: str, template: str, cron: str | None, every: int | None, tz: str, catch_up: str,
        param_values: tuple[str, ...], params_json: str | None, paused: bool | None, url: str,
        as_json: bool) -> None:  # fmt: skip
    """Create or update schedule NAME, which starts an instance of TEMPLATE at every tick."""
    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    body: dict[str, Any] = {"name": name, "template": template, "timezone": tz, "catch_up": catch_up,
                            "runtime_parameters": _params(param_values, params_json)}  # fmt: skip
    if cron is not None:
        body["cron"] = cron
    else:
        body["every"] = every
    if paused is not None:
        body["paused"] = paused
    item = expect(call_worker("POST", url, "/api/v1/schedules", params=_ACTOR, json=body), url, dict, "name")
    _show(item, "scheduled", as_json)


@schedules.command(cls=ClientCommand)
@click.argument("name")
@url_option
@json_option
def delete(name: str, url: str, as_json: bool) -> None:
    """Delete schedule NAME (the instances it created stay)."""
    answer = expect(call_worker("DELETE", url, _path(name), params=_ACTOR), url, dict, "name", "deleted")
    if as_json:
        print_json(answer)
    else:
        console.print(f"deleted schedule {answer['name']}", highlight=False)


@schedules.command(cls=ClientCommand)
@click.argument("name")
@url_option
@json_option
def pause(name: str, url: str, as_json: bool) -> None:
    """Pause schedule NAME: no tick fires until it is resumed."""
    _show(expect(call_worker("POST", url, _path(name) + "/pause", params=_ACTOR), url, dict, "name"), "paused",
          as_json)  # fmt: skip


@schedules.command(cls=ClientCommand)
@click.argument("name")
@url_option
@json_option
def resume(name: str, url: str, as_json: bool) -> None:
    """Resume schedule NAME; ticks that came due while paused follow its catch-up mode."""
    _show(expect(call_worker("POST", url, _path(name) + "/resume", params=_ACTOR), url, dict, "name"),
          "resumed", as_json)  # fmt: skip
