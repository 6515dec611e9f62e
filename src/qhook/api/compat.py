"""The AlisQI-compatible API: ``/api/<operation>``, so the original's clients work unchanged.

Every parameter may come in the query string or in a form body (urlencoded or multipart; a JSON
object body works too). The key comes as ``Authorization: Bearer <key>`` or as one of the
parameters ``access_token``, ``accessToken``, ``authToken``, ``authtoken``. Errors are
``{"error": "..."}`` with 400, 401, 403, 404 or 429.

Operations and their answers:

- ``GET|POST /api/getAllSets?groups=&names=`` -> ``[{"id", "name", "groupId", "groupName",
  "topLevelMenu"}]``; ``groups`` are group ids or names, ``names`` set names (comma-separated or
  a JSON array).
- ``GET|POST /api/getSetDefinition?setId=&onlyActiveFields=true`` -> ``{"id", "name", "groupId",
  "groupName", "topLevelMenu", "kind", "fields": [{"id", "name", "label", "type", "required",
  "active", "position", "options": [{"id", "label", "active"}] (list fields only)}]}``.
- ``GET|POST /api/getResults?setId=&limit=100&offset=0&sort=date:desc&filter=&fields=&includeId=false
  &includeLastModificationDate=false`` -> ``[{"@id"?, "date": "YYYY-MM-DD HH:MM:SS", "<field>": value,
  ..., "lastModificationDate"?}]``; list fields as their label, empty fields null; ``limit`` 1..10000;
  ``sort`` is ``field:asc|desc`` (comma-separated for several; ``date`` and ``@id`` too);
  ``filter`` is ``{"status_": [{"value": 3}]}`` (option id or label) or ``{"status_": "released"}``.
- ``POST /api/storeResults`` with ``setId``, ``results`` (a JSON array of result objects, or one
  object; ``date`` and ``@id`` optional in each), optional ``keyField``, ``editOnly``,
  ``addListOptions``. All results of one call are stored in one transaction, or none is.
  Answer (200)::

      {"results": [{"@id": 17, "action": "created"}, {"@id": 9, "action": "updated"}],
       "created": 1, "updated": 1}

  one entry per input result, in input order. When any result is bad nothing is stored and the
  answer is 400 with every problem, by 0-based position in ``results``::

      {"error": "1 of 2 result(s) could not be stored, so none was stored: results[1]: ...",
       "errors": [{"index": 1, "error": "values.ph_: expected a number"}]}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from qhook.api.deps import authenticate_token, carried_token, context_of
from qhook.api.json_body import JsonBodyRoute
from qhook.context import AppContext
from qhook.domain import compat, json_text
from qhook.domain.access import Principal
from qhook.errors import Unauthorized
from qhook.services import compat as service

router = APIRouter(route_class=JsonBodyRoute, prefix="/api", tags=["compat"], include_in_schema=False)

Params = dict[str, str]


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


async def _params(request: Request, ctx: AppContext) -> Params:
    """Query string, then the body's parameters over it (form, multipart or a JSON object)."""
    # Query strings are UTF-8 (the URL standard); one that is not is refused, not stored with
    # U+FFFD in place of its letters.
    params: Params = dict(compat.form_fields(request.scope["query_string"], "utf-8", "query string"))
    header = request.headers.get("content-type", "")
    content_type = header.split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        params.update(compat.form_fields(await request.body(), compat.charset_of(header)))
    elif content_type == "multipart/form-data":
        limit = ctx.settings.max_body_bytes
        async with request.form(max_part_size=limit) as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    charset = compat.charset_of(value.content_type or "", compat.charset_of(header))
                    params[name] = compat.decoded(await value.read(), charset, name)
                else:
                    params[name] = value
    elif content_type == "application/json":
        body = await request.body()
        if body.strip():
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                byte = f"byte {exc.object[exc.start]:#04x} at {exc.start}"
                raise compat.bad_parameter(
                    "body",
                    f"Expected JSON in UTF-8 (RFC 8259; a declared charset is not read): {byte} is not.",
                ) from exc
            try:
                parsed = json_text.loads(body)
            except json.JSONDecodeError as exc:
                refusal = json_text.refused(exc.msg)
                if refusal is not None:
                    raise compat.bad_parameter(refusal[0], f"Expected {refusal[1]}.") from exc
                raise compat.bad_parameter("body", "Expected a JSON object of parameters.") from exc
            if not isinstance(parsed, dict):
                raise compat.bad_parameter("body", "Expected a JSON object of parameters.")
            for name, value in parsed.items():
                if value is None:  # what serialisers send for an optional parameter not set
                    continue
                params[name] = value if isinstance(value, str) else json.dumps(value)
    for name, value in params.items():
        if "\x00" in value:  # a form field or an uploaded file; JSON is refused by json_text
            raise compat.bad_parameter(json_text.without_nul(name), f"Expected {json_text.NUL_EXPECTED}.")
    return params


async def _principal(request: Request, ctx: AppContext, params: Params) -> Principal:
    token = carried_token(request, params)
    if not token:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>' or an access_token parameter")
    return await authenticate_token(request, ctx, token)


async def _call(request: Request, operation: Callable[[AppContext, Principal, Params], Any]) -> Response:
    ctx = context_of(request)
    params = await _params(request, ctx)
    principal = await _principal(request, ctx, params)
    return _json(await run_in_threadpool(operation, ctx, principal, params))


def _set_id(params: Params) -> int:
    return compat.parse_int(params.get("setId"), "setId", minimum=1)


def _all_sets(ctx: AppContext, principal: Principal, params: Params) -> Any:
    return service.all_sets(ctx, principal, groups=params.get("groups"), names=params.get("names"))


def _set_definition(ctx: AppContext, principal: Principal, params: Params) -> Any:
    only_active = compat.parse_bool(params.get("onlyActiveFields"), "onlyActiveFields", default=True)
    return service.set_definition(ctx, principal, _set_id(params), only_active=only_active)


def _results(ctx: AppContext, principal: Principal, params: Params) -> Any:
    query = service.ResultsQuery(
        set_id=_set_id(params),
        limit=compat.parse_int(
            params.get("limit"), "limit", default=compat.DEFAULT_LIMIT, minimum=1, maximum=compat.MAX_LIMIT
        ),
        offset=compat.parse_int(params.get("offset"), "offset", default=0),
        sort=params.get("sort"),
        filter=params.get("filter"),
        fields=params.get("fields"),
        include_id=compat.parse_bool(params.get("includeId"), "includeId"),
        include_last_modification=compat.parse_bool(
            params.get("includeLastModificationDate"), "includeLastModificationDate"
        ),
    )
    return service.get_results(ctx, principal, query)


def _store(ctx: AppContext, principal: Principal, params: Params) -> Any:
    set_id = _set_id(params)
    items = compat.parse_results_param(params.get("results"))
    key_field = (params.get("keyField") or "").strip() or None
    stored = service.store_results(
        ctx,
        principal,
        set_id,
        items,
        key_field=key_field,
        edit_only=compat.parse_bool(params.get("editOnly"), "editOnly"),
        add_list_options=compat.parse_bool(params.get("addListOptions"), "addListOptions"),
    )
    created = sum(1 for s in stored if s.created)
    return {
        "results": [{"@id": s.result_id, "action": "created" if s.created else "updated"} for s in stored],
        "created": created,
        "updated": len(stored) - created,
    }


@router.api_route("/getAllSets", methods=["GET", "POST"])
async def get_all_sets(request: Request) -> Response:
    return await _call(request, _all_sets)


@router.api_route("/getSetDefinition", methods=["GET", "POST"])
async def get_set_definition(request: Request) -> Response:
    return await _call(request, _set_definition)


@router.api_route("/getResults", methods=["GET", "POST"])
async def get_results(request: Request) -> Response:
    return await _call(request, _results)


@router.post("/storeResults")
async def store_results(request: Request) -> Response:
    try:
        return await _call(request, _store)
    except service.StoreResultsFailed as exc:
        return _json({"error": exc.message, "errors": exc.errors}, status_code=exc.status)
