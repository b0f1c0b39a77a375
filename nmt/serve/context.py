"""What every handler of `nmt serve` shares: the pairs served, the limits, the batcher,
the detector and access control; and `endpoint`, which reads each request's parameters
at the door, checks its access, and turns a refusal into its 4xx with a JSON message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nmt.errors import NmtError
from nmt.serve import door
from nmt.serve.batcher import Batcher
from nmt.serve.detect import Detector
from nmt.serve.door import Params, RequestError
from nmt.serve.keys import KeyStore, RateLimiter
from nmt.serve.limits import Limits


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: its parameters, and its limit of characters per
    text (the server's, or its API key's own)."""

    params: Params
    chars: int
    request: Request


@dataclass
class Served:
    pairs: list[str]  # "de-en", ...: the N-th is OpenNMT-py's model id N
    limits: Limits
    batcher: Batcher
    detector: Detector
    keys: KeyStore | None = None  # None: no API keys (an api_key sent is ignored)
    limiter: RateLimiter | None = None

    @property
    def languages(self) -> list[str]:
        """Every language of a served pair, in the order the pairs name them."""
        return list(dict.fromkeys(code for p in self.pairs for code in p.split("-")))

    def pair(self, source: object, target: object) -> str:
        if f"{source}-{target}" not in self.pairs:
            served = ", ".join(self.pairs)
            raise RequestError(f"no model for {source} -> {target}; served: {served}")
        return f"{source}-{target}"

    def check_chars(self, texts: list[str], most: int, name: str) -> None:
        """LibreTranslate's char_limit: each text at most `most` characters, else 400."""
        for i, text in enumerate(texts):
            if len(text) > most:
                which = f"'{name}'" if len(texts) == 1 else f"'{name}' item {i}"
                raise RequestError(f"{which} has {len(text)} characters, over the limit of {most}")

    def admit(self, params: Params, request: Request) -> int:
        """Checks the API key and the request limit (403, 429); -> characters per text."""
        key, chars = params.get("api_key"), self.limits.char_limit
        limit, client = self.limits.req_limit, f"address {_address(request)}"
        who = client  # counted apart: an address, or a key
        if self.keys is not None:
            if not isinstance(key, str):
                needed = "this server needs an API key ('api_key'): ask its operator for one"
                raise RequestError(needed, 403)
            found = self.keys.lookup(key)
            if found is None:
                raise RequestError("invalid API key", 403)
            (limit, own_chars), client, who = found, "this API key", f"key {key}"
            chars = own_chars or chars
        cost = _cost(params)
        if limit > 0 and self.limiter is not None:
            if cost > limit:
                raise RequestError(
                    f"{cost} texts in one request: {client} may send {limit} a minute", 429
                )
            wait = self.limiter.admit(who, limit, cost)
            if wait:
                seconds = str(max(1, round(wait)))
                raise RequestError(
                    f"too many requests: {limit} texts a minute for {client}; retry in {seconds} s",
                    429,
                    {"Retry-After": seconds},
                )
        return chars


def endpoint(
    served: Served,
    handler: Callable[[Call], Awaitable[Response]],
    *,
    guarded: bool,
    files: bool = False,
):
    """A Starlette endpoint: the door, then (`guarded`) the key and limit, then the handler;
    `files`: whether the request may upload files."""

    async def handle(request: Request) -> Response:
        try:
            body = await request.body()  # read by the guard already, under its limits
            kind = request.headers.get("content-type", "")
            params = door.read(
                request.scope["query_string"], body, kind, served.limits, files=files
            )
            chars = served.admit(params, request) if guarded else served.limits.char_limit
            return await handler(Call(params, chars, request))
        except RequestError as err:
            return JSONResponse({"error": str(err)}, err.status, headers=err.headers)
        except NmtError as err:  # an option out of its range, named by the library
            return JSONResponse({"error": str(err)}, 400)

    return handle


def _cost(params: Params) -> int:
    """What a request counts against a limit: one per text, as LibreTranslate counts."""
    texts = params.body if isinstance(params.body, list) else params.get("q", params.get("text"))
    return max(1, len(texts)) if isinstance(texts, list) else 1


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
