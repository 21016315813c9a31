"""The bulk forms of the operators' commands: ``stop --filter ...`` and ``retry --filter
...`` start a bulk job on a running worker (``POST /api/v1/instances/bulk``, as actor
``cli``) and print its progress until it is done (``--no-wait``: only its id);
``--dry-run`` prints how many instances the filter matches. ``stop ID`` stops one workflow."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import click
from rich import box
from rich.table import Table

from ..errors import InvalidInput
from ..model.query import query_from_pairs
from .client import ClientCommand, call_worker, expect, json_option, print_json, styled_status, url_option
from .group import cli, console

POLL_SECONDS = 0.5


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r}: expected NAME=VALUE, e.g. status=FAILURE or param.order_id=42",
                                 param_hint="--filter")  # fmt: skip
    return name, value


def filter_of(filters: tuple[str, ...]) -> dict[str, str]:
    """The JSON filter of the ``--filter NAME=VALUE`` options, checked here (a usage error
    names the unknown or repeated filter before anything is sent)."""
    pairs = [_pair(f) for f in filters]
    try:
        query_from_pairs(pairs)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    return dict(pairs)


filter_option = click.option(
    "--filter", "filters", multiple=True, metavar="NAME=VALUE",
    help="Act on every instance matching all of these (status, template, param.NAME, waiting_on, "
         "created_after, ...), as a bulk job; repeatable.",
)  # fmt: skip
dry_run_option = click.option("--dry-run", is_flag=True, help="With --filter: only count the matches.")
no_wait_option = click.option("--no-wait", is_flag=True, help="With --filter: print the job id, do not follow it.")
batch_option = click.option("--batch-size", type=click.IntRange(1, 1000), default=None,
                            help="With --filter: instance events per pipeline batch and partition.")  # fmt: skip


def run_bulk(action: str, filters: tuple[str, ...], url: str, *, dry_run: bool, no_wait: bool,
             batch_size: int | None, as_json: bool) -> None:  # fmt: skip
    body: dict[str, Any] = {"action": action, "filter": filter_of(filters), "dry_run": dry_run}
    if batch_size is not None:
        body["batch_size"] = batch_size
    answer = expect(call_worker("POST", url, "/api/v1/instances/bulk", params={"actor": "cli"}, json=body),
                    url, dict, "matched")  # fmt: skip
    job = answer.get("job")
    if job is None or no_wait:
        if as_json:
            print_json(answer)
        elif job is None:
            console.print(f"{answer['matched']} instances match: a {action} would act on them")
        else:
            console.print(f"bulk {action} job {job} started: {answer['matched']} instances matched")
        return
    if not as_json:
        console.print(f"bulk {action} job {job} started: {answer['matched']} instances matched")
    last: tuple[Any, ...] | None = None
    while True:
        status = expect(call_worker("GET", url, f"/api/v1/bulk/{quote(job, safe='')}"), url, dict,
                        "state", "done", "failed", "remaining")  # fmt: skip
        seen = (status["state"], status["done"], status["failed"], status["remaining"])
        if seen != last and not as_json:
            console.print(f"  {status['state']}: done {status['done']}, failed {status['failed']}, "
                          f"remaining {status['remaining']} of {status.get('matched', '?')}")  # fmt: skip
        last = seen
        if status["state"] in ("done", "incomplete"):
            break
        time.sleep(POLL_SECONDS)
    if as_json:
        print_json(status)
        return
    if status["state"] == "incomplete":
        console.print(f"  [yellow]{status.get('partitions_missing', '?')} partition(s) have no share of the job:[/] "
                      "run the same command again to send its start again")  # fmt: skip
    for error in status.get("errors", [])[:10]:
        console.print(f"  [red]not acted on:[/] {error}", highlight=False)


@cli.command(cls=ClientCommand)
@click.argument("instance_id", required=False)
@filter_option
@dry_run_option
@no_wait_option
@batch_option
@url_option
@json_option
def stop(instance_id: str | None, filters: tuple[str, ...], dry_run: bool, no_wait: bool, batch_size: int | None,
         url: str, as_json: bool) -> None:  # fmt: skip
    """Stop workflow INSTANCE_ID, or every workflow --filter matches (a bulk job)."""
    if filters:
        if instance_id is not None:
            raise click.UsageError("give an INSTANCE_ID or --filter, not both")
        run_bulk("stop", filters, url, dry_run=dry_run, no_wait=no_wait, batch_size=batch_size, as_json=as_json)
        return
    if instance_id is None:
        raise click.UsageError("give an INSTANCE_ID, or --filter NAME=VALUE for a bulk stop")
    if dry_run or no_wait or batch_size is not None:
        raise click.UsageError("--dry-run, --no-wait and --batch-size go with --filter")
    path = f"/api/v1/instances/{quote(instance_id, safe='')}/stop"
    after = expect(call_worker("POST", url, path), url, dict, "id")
    if as_json:
        print_json(after)
    elif after.get("deleted"):
        console.print(f"stopped {after['id']} (deleted on completion)")
    else:
        console.print(f"stopped {after['id']} ({styled_status(after['status']['code'])})")


@cli.command("bulk", cls=ClientCommand)
@click.argument("job", required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many of the newest jobs to list.")  # fmt: skip
@url_option
@json_option
def bulk_jobs(job: str | None, limit: int, url: str, as_json: bool) -> None:
    """List the newest bulk jobs (every worker's), or show bulk job JOB."""
    if job is not None:
        status = expect(call_worker("GET", url, f"/api/v1/bulk/{quote(job, safe='')}"), url, dict, "state")
        found = [status]
    else:
        found = expect(call_worker("GET", url, "/api/v1/bulk", params={"limit": str(limit)}), url, list)
    if as_json:
        print_json(status if job is not None else found)
        return
    table = Table(title=f"bulk jobs at {url}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("job", "action", "filter", "state", "matched", "done", "failed", "remaining", "actor"):
        table.add_column(column, no_wrap=column in ("job", "state"))
    for j in found:
        shown = " ".join(f"{k}={v}" for k, v in j["filter"].items()) or "(all)"
        state = {"done": "[green]done[/]", "incomplete": "[red]incomplete[/]"}.get(j["state"], f"[yellow]{j['state']}[/]")
        table.add_row(j["job"], j["action"], shown, state, str(j["matched"]), str(j["done"]), str(j["failed"]),
                      str(j["remaining"]), j.get("actor") or "-")  # fmt: skip
    console.print(table)
