"""The operators' commands: ``retry``, ``skip``, ``complete``, ``submit``, ``patch``. Each
calls one REST action of a running worker (as actor ``cli``) and prints the snapshot after."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from .bulk import batch_option, dry_run_option, filter_option, no_wait_option, run_bulk
from .client import ClientCommand, call_worker, expect, json_option, print_json, styled_status, url_option
from .group import cli, console
from .params import json_object

_ACTOR = {"actor": "cli"}


def _act(method: str, url: str, path: str, done: str, as_json: bool, **kwargs: Any) -> None:
    after = expect(call_worker(method, url, path, params=_ACTOR, **kwargs), url, dict, "id")
    if as_json:
        print_json(after)
    elif after.get("deleted"):
        console.print(f"{done} {after['id']} (deleted on completion)")
    else:
        console.print(f"{done} {after['id']} ({styled_status(after['status']['code'])})")


def _instance(instance_id: str) -> str:
    return f"/api/v1/instances/{quote(instance_id, safe='')}"


@cli.command(cls=ClientCommand)
@click.argument("instance_id", required=False)
@click.option("--params", "params_json", metavar="JSON", help="Merged into the runtime parameters first.")
@filter_option
@dry_run_option
@no_wait_option
@batch_option
@url_option
@json_option
def retry(instance_id: str | None, params_json: str | None, filters: tuple[str, ...], dry_run: bool,
          no_wait: bool, batch_size: int | None, url: str, as_json: bool) -> None:  # fmt: skip
    """Run a FAILURE workflow again from its failed tasks (completed tasks do not run again);
    with --filter, every FAILURE workflow it matches, as a bulk job."""
    if filters:
        if instance_id is not None or params_json is not None:
            raise click.UsageError("--filter retries what it matches: give no INSTANCE_ID or --params with it")
        run_bulk("retry", filters, url, dry_run=dry_run, no_wait=no_wait, batch_size=batch_size, as_json=as_json)
        return
    if instance_id is None:
        raise click.UsageError("give an INSTANCE_ID, or --filter NAME=VALUE for a bulk retry")
    if dry_run or no_wait or batch_size is not None:
        raise click.UsageError("--dry-run, --no-wait and --batch-size go with --filter")
    body = {} if params_json is None else {"runtime_parameters": json_object(params_json, "--params")}
    _act("POST", url, _instance(instance_id) + "/retry", "retried", as_json, json=body)


@cli.command(cls=ClientCommand)
@click.argument("instance_id")
@click.argument("node_id")
@url_option
@json_option
def skip(instance_id: str, node_id: str, url: str, as_json: bool) -> None:
    """End task NODE_ID, which the workflow waits at, as SKIPPED; the workflow goes on."""
    path = f"{_instance(instance_id)}/tasks/{quote(node_id, safe='')}/skip"
    _act("POST", url, path, f"skipped {node_id} of", as_json)


@cli.command(cls=ClientCommand)
@click.argument("instance_id")
@click.argument("node_id")
@url_option
@json_option
def complete(instance_id: str, node_id: str, url: str, as_json: bool) -> None:
    """End the waiting listener, sensor or trigger NODE_ID as COMPLETED; the workflow goes on."""
    path = f"{_instance(instance_id)}/tasks/{quote(node_id, safe='')}/complete"
    _act("POST", url, path, f"completed {node_id} of", as_json)


@cli.command(cls=ClientCommand)
@click.argument("instance_id")
@url_option
@json_option
def submit(instance_id: str, url: str, as_json: bool) -> None:
    """Start a workflow created with --no-submit (NOT_STARTED)."""
    _act("POST", url, _instance(instance_id) + "/submit", "submitted", as_json)


@cli.command(cls=ClientCommand)
@click.argument("instance_id")
@click.option("--params", "params_json", metavar="JSON", required=True, help="A JSON object to merge.")
@url_option
@json_option
def patch(instance_id: str, params_json: str, url: str, as_json: bool) -> None:
    """Merge --params into the runtime parameters of a workflow that has not ended."""
    changes = json_object(params_json, "--params")
    _act("PATCH", url, _instance(instance_id) + "/parameters", "patched", as_json, json=changes)
