"""Optional access control of `structome serve`: one shared token, checked on every request before any route.

A client shows the token as `Authorization: Bearer TOKEN` (scripts, curl), or once as `?token=TOKEN` on any URL
(a browser link): that request is answered and sets the token as a cookie (HttpOnly, SameSite=Strict), which the
page's own requests (viewer files, downloads, the API calls of entry.js) then carry. A request without a valid
token gets 401 with `WWW-Authenticate: Bearer`, whatever its path (an unknown path too: nothing is revealed).
Tokens are compared in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import parse_qs

from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "structome_token"
TOKEN_PARAMETER = "token"
TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9._~+/=-]+")  # RFC 6750's b64token: fits a header, a cookie and a URL


class TokenRequired:
    """ASGI middleware: the wrapped app answers only requests that show `token`."""

    def __init__(self, app: ASGIApp, token: str):
        if not TOKEN_SYNTAX.fullmatch(token):
            raise ValueError("an access token is letters, digits and - . _ ~ + / = (e.g. secrets.token_urlsafe(32))")
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        from_query = _query_token(scope)
        shown = [_bearer(headers.get("authorization")), cookie_parser(headers.get("cookie", "")).get(TOKEN_COOKIE)]
        if not any(self._valid(token) for token in (*shown, from_query)):
            await _unauthorized(scope, receive, send)
            return
        if self._valid(from_query) and not any(self._valid(token) for token in shown):
            send = _setting_cookie(send, from_query or "")
        await self.app(scope, receive, send)

    def _valid(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._token)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(TOKEN_PARAMETER)
    return values[0] if values else None


def _setting_cookie(send: Send, token: str) -> Send:
    cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")

    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return send_with_cookie


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {"error": "this server needs an access token: send `Authorization: Bearer TOKEN`", "status": 401},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="structome"'},
    )
    await response(scope, receive, send)
