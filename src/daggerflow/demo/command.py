"""``daggerflow demo pizza``: the pizza demo on the command line, with its progress bar.

The bar counts completed orders only (completed of total); failed and unfinished orders are
counted beside it, so a run with failures never shows a full bar. ``--timeout 0`` means no
timeout: wait until every order has finished, however long that takes.
"""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console

from ..errors import DaggerError
from ..logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from ..worker import until_stop_signal
from .pizza import DemoReport, run_pizza_demo

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


@click.group()
def demo() -> None:
    """Self-contained demos on the embedded engine."""


@demo.command("pizza")
@click.option("--orders", "-n", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--store", help="State store URL (default: a temporary SQLite file, removed afterwards).")
@click.option(
    "--web-port", type=click.IntRange(0, 65535), default=0, show_default=True, help="REST API port (0: any free port)."
)
@click.option(
    "--kitchen-delay",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Maximum seconds the simulated order service takes to answer READY.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Give up on orders not finished after this many seconds (0: no timeout).",
)
@click.option(
    "--fail-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Refuse the delivery of every Nth order (orders 0, N, 2N...), to see failures (0: none).",
)
@click.option(
    "--serve", is_flag=True, help="Keep the engine, its REST API and its web console (/ui) running until Ctrl-C."
)
@click.option(
    "--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING", show_default=True
)
@click.option(
    "--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False), default="text", show_default=True
)
def demo_pizza(
    orders: int,
    store: str | None,
    web_port: int,
    kitchen_delay: float,
    timeout: float,
    fail_every: int,
    serve: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run ORDERS pizza workflows (order -> wait for READY -> deliver) end to end.

    Exit codes: 0 when every order completed, 1 otherwise (or when the demo cannot run,
    e.g. its port is taken), 2 for a wrong option."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    configure_logging(level=log_level, fmt=log_format)
    console.print(
        f"[bold]daggerflow pizza demo[/]: {orders} orders, each Order (command -> wait for READY) "
        "then Delivery (HTTP POST)"
    )
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/], {task.fields[unfinished]} unfinished"),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("completed", total=orders, failed=0, unfinished=0)

    def on_progress(completed: int, failed: int, unfinished: int) -> None:
        progress.update(bar, completed=completed, failed=failed, unfinished=unfinished)

    async def after(report: DemoReport, engine: object) -> None:
        progress.stop()
        print_demo_report(report, serving=serve)
        if serve:
            await until_stop_signal()

    with progress:
        try:
            report = asyncio.run(
                run_pizza_demo(
                    orders,
                    store=store,
                    web_port=web_port,
                    kitchen_delay=kitchen_delay,
                    timeout=timeout or None,
                    fail_every=fail_every,
                    progress=on_progress,
                    after=after,
                )
            )
        except DaggerError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if not report.ok:
        sys.exit(1)


def print_demo_report(report: DemoReport, *, serving: bool) -> None:
    ms = 1000.0
    style = "green" if report.ok else "red"
    console.print(
        f"[{style}]completed {report.completed}/{report.orders}[/] "
        f"(failed {report.failed}, unfinished {report.unfinished}); "
        f"{report.deliveries} deliveries received"
    )
    console.print(f"throughput: {report.throughput:.1f} completed workflows/s ({report.elapsed:.2f} s)")
    if report.latencies:
        console.print(
            f"latency creation -> COMPLETED: p50 {report.percentile(50) * ms:.0f} ms, "
            f"p99 {report.percentile(99) * ms:.0f} ms"
        )
    else:
        console.print("latency creation -> COMPLETED: - (no order completed)")
    for failure in report.failures:
        console.print(f"[red]  {failure}[/]", highlight=False)
    if report.web_url is None:
        console.print("REST API: off")
    elif serving:
        console.print(f"web console at [bold]{report.web_url}/ui/[/] (open it in a browser)")
        console.print(
            f"REST API at {report.web_url} (try: daggerflow instances --url {report.web_url}); Ctrl-C to stop"
        )
    else:
        console.print(f"REST API was at {report.web_url} (stopped with the demo; --serve keeps it)")
    console.print(f"store: {report.store}")
