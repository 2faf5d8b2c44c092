"""The one middleware: the scope check on every route, and API errors as JSON bodies."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from voucherd import errors, wire
from voucherd.server.keys import CALLER, IN_FLIGHT, READINESS, SCOPES, SETTINGS
from voucherd.settings import ApiKey, Scope

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(error: errors.VoucherdError) -> web.Response:
    response = wire.response(error.body(), status=error.status)
    if isinstance(error, errors.Overloaded):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    # One middleware, not two: each layer costs a coroutine per request on the hot path.
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    try:
        _admit(request)
        return await handler(request)
    except errors.VoucherdError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        body = {"error": {"code": code, "message": message}}
        return wire.response(body, status=exc.status, headers=_allow(exc))
    except web.RequestPayloadError:
        # A body that cannot be decoded (a broken gzip, bad chunks): the client's, not ours.
        # The connection closes after the reply; marking the body read keeps aiohttp from
        # reading it again afterwards, which would raise the same error as a traceback.
        request.content.feed_eof()
        body = {"error": {"code": "invalid_request", "message": "the body could not be decoded"}}
        response = wire.response(body, status=400)
        response.force_close()
        return response
    except ConnectionResetError:
        # The client went away mid-request: routine, and a traceback each would let anyone
        # fill the log. The reply goes nowhere.
        log.debug("client left during %s %s", request.method, request.rel_url.path)
        body = {"error": {"code": "invalid_request", "message": "the request was cut off"}}
        return wire.response(body, status=400)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.rel_url.path)
        body = {"error": {"code": "internal_error", "message": "unexpected server error"}}
        return wire.response(body, status=500)
    finally:
        in_flight.leave()


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def _admit(request: web.Request) -> None:
    scopes = request.app[SCOPES]
    route_handler = request.match_info.handler
    if route_handler not in scopes:
        # Unknown path or method: let the router's 404/405 through without asking for a key.
        return
    scope = scopes[route_handler]
    settings = request.app[SETTINGS]
    if scope is not None and not settings.open_mode:
        key = _key_of(request, settings.keys)
        if not _grants(key, scope):
            raise errors.Forbidden(f"this key lacks the {scope} scope")
        request[CALLER] = key
    readiness = request.app[READINESS]
    if scope is not None and not readiness.ready:
        if readiness.draining:
            raise errors.NotReady("voucherd is shutting down; retry shortly", retry_after=1)
        raise errors.NotReady("voucherd is recovering its state; retry shortly", retry_after=1)


def _grants(key: ApiKey, scope: Scope) -> bool:
    # admin may also read; nothing else implies another scope.
    return scope in key.scopes or (scope is Scope.READ and Scope.ADMIN in key.scopes)


def _key_of(request: web.Request, keys: tuple[ApiKey, ...]) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise errors.Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    digest = hashlib.sha256(presented.strip().encode("utf-8", "replace")).hexdigest()
    found = None
    for key in keys:
        # Compare every key, in constant time, so timing tells nothing about which matched.
        if hmac.compare_digest(digest, key.sha256):
            found = key
    if found is None:
        raise errors.Unauthorized("the API key is not valid")
    return found
