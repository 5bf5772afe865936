"""`facedemo serve`: uvicorn over the app, and an exit when the models can never load."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from signal import SIGINT, SIGTERM
from types import FrameType
from typing import TYPE_CHECKING, Any

from facedemo.cli.common import EXIT_OK, complain, port_number, positive_int
from facedemo.cli.listening import address_text, bind_listeners
from facedemo.config import Settings
from facedemo.logging_config import build_log_config

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

APP_FACTORY = "facedemo.cli.serve:create_served_app"
# uvicorn's own status for an application that cannot start (uvicorn.config.STARTUP_FAILURE): its
# multi-worker supervisor stops, rather than restarting a worker that exits with it.
EXIT_CANNOT_SERVE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: FACEDEMO_HOST, 127.0.0.1)")
    parser.add_argument(
        "--port", type=port_number, help="port to listen on (default: FACEDEMO_PORT, 8000)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="server processes, each loading its own models (default: 1)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run uvicorn over the app factory; each worker process builds its app from the env.

    On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets in-flight requests finish
    (for up to FACEDEMO_SHUTDOWN_TIMEOUT_SECONDS), runs the lifespan shutdown, and the command
    exits 0. When the models cannot be loaded the process exits with status 3 right after
    logging why (`create_served_app`); with `--workers N`, uvicorn's supervisor stops every
    worker when one exits so, and the command exits 3 too (`_run_workers`). An address it
    cannot listen on (a port in use) exits 3 at once, before the application is imported.
    """
    import uvicorn

    from facedemo.api.connections import GuardedHttpToolsProtocol

    options: dict[str, Any] = {
        "factory": True,
        "host": args.host or settings.host,
        "port": args.port or settings.port,
        "workers": args.workers,
        "log_level": settings.log_level,
        # uvicorn applies it in every worker process too; our access line replaces uvicorn's.
        "log_config": build_log_config(settings),
        "access_log": False,
        # No "server: uvicorn" banner: it tells a scanner which server's flaws to try.
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
        # Header and body deadlines, a header cap and a connection cap (api/connections.py); a
        # class, which uvicorn pickles by reference into each worker process.
        "http": GuardedHttpToolsProtocol,
        "timeout_keep_alive": settings.keepalive_timeout_seconds,
    }
    # uvicorn re-raises the stop signal after its graceful shutdown so that the signal's default
    # action ends the process (status -15); a completed graceful shutdown is a clean exit, as
    # prompt (`_exit_cleanly`). Before uvicorn takes the signals over, the same handler just
    # exits: nothing is in flight yet.
    previous = {stop: signal.signal(stop, _exit_cleanly) for stop in (SIGTERM, SIGINT)}
    try:
        config = uvicorn.Config(APP_FACTORY, **options)
        if args.workers == 1:
            return _run_server(config)
        return _run_workers(config)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _run_server(config: uvicorn.Config) -> int:
    """What `uvicorn.run` does for one worker, on sockets bound before the app is imported."""
    import uvicorn

    listeners = _listen(config)
    if listeners is None:
        return EXIT_CANNOT_SERVE
    server = uvicorn.Server(config)
    try:
        server.run(sockets=listeners)
    finally:
        _close(listeners)  # uvicorn closes them on a graceful stop, not when startup fails
    return EXIT_OK if server.started else EXIT_CANNOT_SERVE


def _run_workers(config: uvicorn.Config) -> int:
    """What `uvicorn.run` does for several workers, but with the workers' verdict as the status.

    uvicorn's supervisor stops when a worker exits with EXIT_CANNOT_SERVE, yet its own process
    then ends with 0 (uvicorn 0.55), which an orchestrator reads as a clean stop.
    """
    from uvicorn.supervisors import Multiprocess

    listeners = _listen(config)
    if listeners is None:
        return EXIT_CANNOT_SERVE
    supervisor = Multiprocess(config, sockets=listeners)
    try:
        supervisor.run()
    finally:
        _close(listeners)
    if any(process.exitcode == EXIT_CANNOT_SERVE for process in supervisor.processes):
        return EXIT_CANNOT_SERVE
    return EXIT_OK


def _listen(config: uvicorn.Config) -> list[socket.socket] | None:
    """The config's address bound, or None after saying why it cannot be (one line, no trace)."""
    address = address_text(config.host, config.port)
    try:
        listeners = bind_listeners(config.host, config.port)
    except OSError as error:
        complain(f"cannot listen on {address}: {error.strerror or error}")
        return None
    # uvicorn logs this line itself only when it binds.
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s (Press CTRL+C to quit)", address
    )
    return listeners


def _close(listeners: list[socket.socket]) -> None:
    for listener in listeners:
        listener.close()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # As the signal's default action would, the process ends now, with status 0. A SystemExit
    # here would have the interpreter wait for every thread first: a model load the lifespan
    # left behind kept a drained server alive for seconds. Nothing left running has a caller.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def create_served_app() -> FastAPI:
    """The app `facedemo serve` runs in each worker: one that ends its process if models fail.

    A process that can never become ready must not stay up: `docker run` shows the reason at once
    and Kubernetes reports CrashLoopBackOff with it, instead of a pod alive but never ready.
    """
    from facedemo.api import create_app

    return create_app(on_load_failure=_exit_cannot_serve)


def _exit_cannot_serve(reason: str) -> None:
    # At once rather than through uvicorn's graceful stop: no request can be using the models,
    # and a stop by signal would end a worker with the signal's status, which uvicorn's
    # supervisor answers with a restart that fails the same way.
    logging.getLogger(__name__).critical(
        "exiting with status %d: the models cannot be loaded with this configuration",
        EXIT_CANNOT_SERVE,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CANNOT_SERVE)
