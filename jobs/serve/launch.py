"""Start the server: one process, or several uvicorn processes sharing the port."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from structome.jobs.serve.viewer_assets import ViewerAssets

_SETTINGS_VARIABLE = "STRUCTOME_SERVE_SETTINGS"  # how the parent hands its settings to the worker processes


def run(settings: dict, *, host: str, port: int, workers: int, announce: Callable[[str], None]) -> None:
    """Serve until interrupted. SETTINGS: location, sql_workers, sql_limits, viewer_assets, reload_interval_s."""
    import uvicorn

    options: dict = {"host": host, "port": port, "log_level": "warning", "server_header": False}
    location = settings["location"]
    if workers == 1:
        server = _server(settings)  # loads the viewer files too (logging a warning when it cannot)
        announce(f"serving {location} ({len(server.index):,} entries) on http://{host}:{port}/")
        uvicorn.run(server.app, **options)
        return
    ViewerAssets.load(settings["viewer_assets"])  # fetched once here, so that the processes read the cache
    os.environ[_SETTINGS_VARIABLE] = json.dumps(settings)
    announce(f"serving {location} from {workers} processes on http://{host}:{port}/")
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


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
    )
