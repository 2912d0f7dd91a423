"""Start the server: one process, or several uvicorn processes sharing the port.

The database is opened and the port bound before anything is announced, so that a missing database or a busy port
is one error (LaunchError, FileNotFoundError) and "serving ..." means the socket is listening.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
from collections.abc import Callable

from structome.jobs.serve.protocol import BoundedHttpProtocol
from structome.jobs.serve.viewer_assets import ViewerAssets
from structome.storage.layout import DatabaseLayout

_SETTINGS_VARIABLE = "STRUCTOME_SERVE_SETTINGS"  # how the parent hands its settings to the worker processes
ACCESS_LOG_FORMAT = '%(asctime)s %(client_addr)s "%(request_line)s" %(status_code)s'
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


class LaunchError(Exception):
    """The server cannot start (the port is taken, the address is not this machine's)."""


def run(
    settings: dict, *, host: str, port: int, workers: int, access_log: bool, announce: Callable[[str], None]
) -> None:
    """Serve until interrupted. SETTINGS: location, sql_workers, sql_limits, viewer_assets, reload_interval_s,
    public_url, auth_token."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    location = settings["location"]
    if not DatabaseLayout(location).exists():
        raise FileNotFoundError(f"{location} is not a structome database (no catalog)")
    listening = bind(host, port)  # before loading the index: a busy port fails at once
    try:
        if workers == 1:
            server = _server(settings)  # loads the viewer files too (logging a warning when it cannot)
            app, what = server.app, f"({len(server.index):,} entries)"
        else:
            ViewerAssets.load(settings["viewer_assets"])  # fetched once here, so that the processes read the cache
            os.environ[_SETTINGS_VARIABLE] = json.dumps(settings)
            app, what = f"{__name__}:app_from_environment", f"from {workers} processes"
    except BaseException:
        listening.close()
        raise
    config = uvicorn_config(app, host=host, port=port, workers=workers, access_log=access_log)
    announce(f"serving {location} {what} on http://{host}:{listening.getsockname()[1]}/")
    if workers == 1:
        served = uvicorn.Server(config)
        served.run(sockets=[listening])
        if not served.started:
            raise LaunchError("the server did not start (see the log above)")
    else:
        Multiprocess(config, sockets=[listening]).run()


def uvicorn_config(app, *, host: str, port: int, workers: int = 1, access_log: bool = False, http=BoundedHttpProtocol):
    """How structome runs uvicorn (tests too): bounded requests, its warnings only, and the access log if asked."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    for logger in ("uvicorn", "uvicorn.error"):
        log_config["loggers"][logger]["level"] = "WARNING"
    log_config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "WARNING"
    log_config["formatters"]["access"]["fmt"] = ACCESS_LOG_FORMAT
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    log_config["filters"] = {"tokens": {"()": f"{__name__}.HideTokens"}}
    log_config["handlers"]["access"]["filters"] = ["tokens"]
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        factory=isinstance(app, str),
        http=http,
        log_config=log_config,
        log_level=None,
        access_log=access_log,
        server_header=False,
    )


class HideTokens(logging.Filter):
    """Access-log lines show `?token=` links without the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            path = _TOKEN_IN_QUERY.sub(r"\1...", record.args[2])
            record.args = (*record.args[:2], path, *record.args[3:])
        return True


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (what uvicorn's Config.bind_socket does, with an error instead of exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise LaunchError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listening.set_inheritable(True)
    return listening


def app_from_environment():
    """The ASGI app of one of several server processes (uvicorn imports it by name in each)."""
    return _server(json.loads(os.environ[_SETTINGS_VARIABLE])).app


def _server(settings: dict):
    from structome.jobs.serve.app import create_server
    from structome.jobs.serve.sql_sandbox import SqlLimits

    return create_server(
        settings["location"],
        sql_workers=settings["sql_workers"],
        sql_limits=SqlLimits(**settings["sql_limits"]),
        viewer_assets=settings["viewer_assets"],
        reload_interval_s=settings["reload_interval_s"],
        public_url=settings.get("public_url"),
        auth_token=settings.get("auth_token"),
    )
