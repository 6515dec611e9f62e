"""Request bodies read as JSON with ``domain.json_text`` (strict about lone surrogates).

FastAPI reads a JSON body with ``await request.json()``, which is the standard library's
``json.loads``. Every router of the app is made with ``route_class=JsonBodyRoute``: its
endpoints get a request whose ``json()`` is the strict reader, and a body it refuses is the same
422 as any malformed JSON, naming the body and the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from qhook.domain import json_text


class JsonBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json_text.loads(await self.body())
        return self._json


class JsonBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(JsonBodyRequest(request.scope, request.receive))

        return strict
