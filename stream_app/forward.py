"""``GET /users/{id}`` asked on a worker that does not hold the user is forwarded to the one that
does, found by its URL in the consumer group (``stream_app.owners``). Any client that joins the
group can put a URL there, so a URL is used only when it is a plain ``http://host:port`` whose
host matches ``STREAM_RECO_FORWARD_ALLOW`` (default: this worker's own advertised host); the
request follows no redirect, waits at most ``TIMEOUT_S``, reads at most ``MAX_BODY`` bytes, and
the answer is passed on only when it is a ``user_view/v1`` document of the user asked for.

>>> patterns = ("127.0.0.1", "*.workers.internal")
>>> refusal("http://127.0.0.1:6066", patterns) is None, refusal("http://w1.workers.internal:6066", patterns) is None
(True, True)
>>> refusal("http://169.254.169.254:80", patterns)
"host '169.254.169.254' is not allowed by STREAM_RECO_FORWARD_ALLOW (127.0.0.1, *.workers.internal)"
>>> refusal("http://127.0.0.1:6066/admin?x=1", patterns)
'not a worker address (http://host:port)'
"""
from __future__ import annotations

import asyncio
import socket
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import quote, urlsplit

import jsonschema_rs
import orjson

from stream_app.settings import Settings, env_name

MAX_BODY = 1 << 20  # bytes of a forwarded answer
TIMEOUT_S = 2.0  # for the whole forwarded request


def advertised_host(web_host: str) -> str:
    """The host other workers use for this one: the bind address, or this machine's name when
    bound to every interface."""
    return socket.gethostname() if web_host in ("", "0.0.0.0", "::") else web_host


def allow_patterns(settings: Settings) -> tuple[str, ...]:
    """Host patterns (``*``, ``?``; case-insensitive) a request may be forwarded to."""
    if settings.forward_allow:
        return tuple(p.strip().lower() for p in settings.forward_allow.split(","))
    return (advertised_host(settings.web_host).lower(),)


def refusal(url: str, patterns: tuple[str, ...]) -> str | None:
    """Why ``url`` (a group member's advertised URL) must not be asked; None when it may."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a worker address (http://host:port)"
    if (parts.scheme != "http" or not parts.hostname or port is None or "@" in parts.netloc
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        return "not a worker address (http://host:port)"
    if not any(fnmatchcase(parts.hostname.lower(), p) for p in patterns):
        return f"host {parts.hostname!r} is not allowed by {env_name('forward_allow')} ({', '.join(patterns)})"
    return None


class Forwarder:
    """Asks the owner of a user for the user's list, within the limits above."""

    def __init__(self, settings: Settings):
        self.patterns = allow_patterns(settings)
        self.token = settings.http_token
        schema = orjson.loads((Path(settings.schemas_dir) / "user_view.v1.json").read_bytes())
        self.validator = jsonschema_rs.validator_for(schema)

    async def user_view(self, owner_url: str, user_id: str) -> tuple[int, dict]:
        """(HTTP status, body) to answer with: the owner's ``user_view/v1`` document (200), 404
        when the owner does not know the user either, else 502/503 with the reason."""
        why = refusal(owner_url, self.patterns)
        if why is not None:
            return 502, {"error": f"the worker holding this user advertises {owner_url!r}: {why}; not forwarded"}
        url = f"{owner_url.rstrip('/')}/users/{quote(user_id, safe='')}?forwarded=1"
        try:
            status, body = await asyncio.wait_for(self._get(url), TIMEOUT_S)
        except asyncio.TimeoutError:
            return 503, {"error": f"the worker holding this user ({owner_url}) did not answer within {TIMEOUT_S:g} s"}
        except Exception as exc:  # refused, reset, a body over the limit
            return 503, {"error": f"the worker holding this user ({owner_url}) did not answer: {exc}"}
        if status == 404:
            return 404, {"error": f"unknown user {user_id!r}"}
        if status != 200:
            return 502, {"error": f"the worker holding this user ({owner_url}) answered HTTP {status}"}
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not (isinstance(doc, dict) and self.validator.is_valid(doc) and doc.get("user_id") == user_id):
            return 502, {"error": f"the worker holding this user ({owner_url}) answered with something other "
                                  f"than the user_view/v1 document of {user_id!r}; refused"}
        return 200, doc

    async def _get(self, url: str) -> tuple[int, bytes]:
        import aiohttp

        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
            async with session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    return resp.status, b""
                if (resp.content_length or 0) > MAX_BODY:
                    raise ValueError(f"an answer of {resp.content_length} bytes, over the {MAX_BODY} limit")
                body = bytearray()
                while chunk := await resp.content.read(65_536):
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise ValueError(f"an answer over the {MAX_BODY}-byte limit")
                return resp.status, bytes(body)
