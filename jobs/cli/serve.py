"""`structome serve`: the HTTP server over one database (the routes are in structome.jobs.serve.app)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from urllib.parse import urlsplit

import click

from structome.jobs.cli.options import DB_OPTION
from structome.jobs.serve.sql_sandbox import DEFAULT_SQL_WORKERS, SqlLimits

logger = logging.getLogger(__name__)

_LIMITS = SqlLimits()


@click.command("serve")
@DB_OPTION
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for every interface)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--sql-workers",
    default=DEFAULT_SQL_WORKERS,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Sandboxed processes answering /api/sql and /export (0 turns both off).",
)
@click.option(
    "--sql-timeout",
    default=_LIMITS.timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a query may run.",
)
@click.option(
    "--sql-row-limit",
    default=_LIMITS.row_limit,
    show_default=True,
    type=click.IntRange(1),
    help="Rows a query may return (/export selects at most this many entries).",
)
@click.option(
    "--sql-memory",
    default=f"{_LIMITS.address_space_bytes >> 30}GiB",
    show_default=True,
    help="Address-space bound of each SQL worker process.",
)
@click.option(
    "--viewer-assets",
    "viewer_assets_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Folder with the pinned pdbe-molstar build, for machines without the npm registry.",
)
@click.option(
    "--reload-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between checks for a change of what the database shows (0: serve what is there at start).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Server processes sharing the port (each holds the index and its own SQL workers).",
)
@click.option(
    "--auth-token",
    envvar="STRUCTOME_AUTH_TOKEN",
    help="Every request must show this token (Authorization: Bearer TOKEN, or ?token=TOKEN once in a browser). "
    "Prefer --auth-token-file or $STRUCTOME_AUTH_TOKEN: a command line is visible to other users.",
)
@click.option(
    "--auth-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the access token (white space around it is ignored).",
)
@click.option(
    "--public-url",
    help="Base URL of the absolute links in API answers, e.g. https://structures.example.org "
    "(default: the URL the client used, from its Host header).",
)
@click.option("--access-log", is_flag=True, help="Log one line per request to stderr (tokens in links hidden).")
def serve_command(
    db,
    host,
    port,
    sql_workers,
    sql_timeout,
    sql_row_limit,
    sql_memory,
    viewer_assets_dir,
    reload_interval,
    workers,
    auth_token,
    auth_token_file,
    public_url,
    access_log,
) -> None:
    """Serve a database over HTTP: AFDB-style /api/prediction and /files, /api/sql, /entry pages, /export."""
    from structome.jobs.serve import launch

    token = _access_token(auth_token, auth_token_file)
    if (warning := exposure_warning(host, token)) is not None:
        click.echo(warning, err=True)
    settings = {
        "location": db,
        "sql_workers": sql_workers,
        "viewer_assets": viewer_assets_dir,
        "reload_interval_s": reload_interval,
        "sql_limits": {"timeout_s": sql_timeout, "row_limit": sql_row_limit, "address_space_bytes": _bytes(sql_memory)},
        "public_url": _public_url(public_url),
        "auth_token": token,
    }
    try:
        launch.run(
            settings,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            announce=lambda text: click.echo(text, err=True),
        )
    except (launch.LaunchError, FileNotFoundError, NotADirectoryError) as error:
        raise click.ClickException(str(error)) from error


def exposure_warning(host: str, token: str | None) -> str | None:
    """A warning when the server listens beyond this machine and anyone who reaches it may use it."""
    if token is not None or _is_loopback(host):
        return None
    return (
        f"warning: --host {host} serves anyone who can reach this machine, and no access token is set "
        "(give --auth-token-file, or put the server behind your own proxy)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _access_token(token: str | None, token_file: Path | None) -> str | None:
    from structome.jobs.serve.auth import TOKEN_SYNTAX

    if token is not None and token_file is not None:
        raise click.UsageError("give --auth-token or --auth-token-file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise click.ClickException(f"cannot read the access token from {token_file}: {error}") from error
    if token is not None and not TOKEN_SYNTAX.fullmatch(token):
        raise click.BadParameter(
            "an access token is letters, digits and - . _ ~ + / = "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
            param_hint="--auth-token",
        )
    return token


def _public_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise click.BadParameter(f"{url!r}: give http(s)://host[:port][/path]", param_hint="--public-url")
    return url.rstrip("/")


def _bytes(text: str) -> int:
    units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    number = text.strip().lower().rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text.strip().lower()[len(number) :]
    if unit not in units or not number:
        raise click.BadParameter(f"{text!r}: give bytes, e.g. 4GiB or 512MiB")
    return int(float(number) * units[unit])
