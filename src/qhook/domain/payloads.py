"""Webhook bodies: sandboxed Jinja2 templates and the envelope, serialised once, deterministically."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from qhook.domain import json_text
from qhook.domain.fields import format_iso
from qhook.domain.filters import FieldLike
from qhook.errors import ValidationFailed

PAYLOAD_KINDS = ("envelope", "result", "template")


class PayloadError(ValueError):
    """A template that fails at render time (the event still commits; the reason is recorded)."""


def _finalize(value: Any) -> Any:
    # An empty field renders as nothing rather than the word "None".
    return "" if value is None else value


MAX_RENDERED_CHARS = 16 * 1024 * 1024
"""The most a template may render: above any value a request can carry (QHOOK_MAX_BODY_BYTES is
10 MiB by default), far below what a slip such as ``{{ batch_ * 100000000 }}`` built (800 MB, 10 s,
in the request that saved the result)."""
MAX_POWER_BITS = 64 * 1024
MAX_LOOP_STEPS = 1_000_000
"""Loop iterations per render, all loops together: two nested loops over range(100000) ran 10^10
times, printing nothing, so no output cap would stop them."""
_steps: ContextVar[list[int] | None] = ContextVar("template_steps", default=None)


def _counted(iterable: Any) -> Iterator[Any]:
    """A loop's items, each counted against the render's budget."""
    budget = _steps.get()
    for item in iterable:
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise PayloadError(f"template error: its loops run more than {MAX_LOOP_STEPS:,} times")
        yield item


class _Bounded(SandboxedEnvironment):
    """The sandbox, with repetition and powers bounded before they are computed and every loop
    counted (its iterable goes through ``_counted``, put in by ``_parse``)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "qhook_counted", [], [], None, None, lineno=loop.iter.lineno)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and not isinstance(times, bool)
                ):
                    if len(seq) * times > MAX_RENDERED_CHARS:
                        raise PayloadError(
                            f"template error: repeating {len(seq)} items {times} times is too much"
                        )
        elif operator == "%":
            if isinstance(left, str):
                _check_widths(left, right if isinstance(right, tuple) else (right,))
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and abs(left).bit_length() * right > MAX_POWER_BITS
        ):
            raise PayloadError(f"template error: {left} ** {right} is too large a number")
        return super().call_binop(context, operator, left, right)


_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")


def _too_big(size: int, what: str) -> None:
    if size > MAX_RENDERED_CHARS:
        raise PayloadError(f"template error: {what} would make {size:,} characters")


def _check_widths(pattern: str, args: Sequence[Any]) -> None:
    """printf-style widths ("%999999999s", "%*s") checked before Python pads to them."""
    stars = iter(a for a in args if isinstance(a, int) and not isinstance(a, bool))
    for width, precision in _WIDTH.findall(pattern):
        for number in (width, precision):
            if number == "*":
                _too_big(next(stars, 0), "a formatted width")
            elif number:
                _too_big(int(number), "a formatted width")


def _bounded_filters(env: SandboxedEnvironment) -> None:
    """The filters and globals whose arguments say how big their answer gets, checked first."""

    def guard(name: str, check: Callable[..., None], *, table: dict[str, Any]) -> None:
        original = table[name]

        @functools.wraps(original)  # keeps Jinja's pass_eval_context marks
        def bounded(*args: Any, **kwargs: Any) -> Any:
            check(*args, **kwargs)
            return original(*args, **kwargs)

        table[name] = bounded

    def center(value: Any, width: int = 80) -> None:
        _too_big(int(width) if isinstance(width, int) else 0, "center")

    def indent(s: Any, width: int | str = 4, *_: Any, **__: Any) -> None:
        lines = str(s).count("\n") + 1
        _too_big(lines * (len(width) if isinstance(width, str) else int(width)), "indent")

    def format_(value: Any, *args: Any, **_: Any) -> None:
        _check_widths(str(value), args)

    def replace(_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> None:
        text, old, new = str(s), str(old), str(new)
        times = len(text) + 1 if not old else text.count(old)
        if count is not None:
            times = min(times, max(int(count), 0))
        _too_big(len(text) + times * max(len(new) - len(old), 0), "replace")

    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> None:
        _too_big(int(n) * int(max) * 12, "lipsum")  # at most ~12 characters a word

    guard("center", center, table=env.filters)
    guard("indent", indent, table=env.filters)
    guard("format", format_, table=env.filters)
    guard("replace", replace, table=env.filters)
    guard("lipsum", lipsum, table=env.globals)


_env = _Bounded(autoescape=False, finalize=_finalize, keep_trailing_newline=True)
_env.filters["qhook_counted"] = _counted
_bounded_filters(_env)


@lru_cache(maxsize=512)
def _compiled(text: str) -> Template:
    return _env.from_string(text)


def _fail(path: str, expected: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {expected}", details=[{"field": path, "error": expected}])


def dumps(value: Any) -> str:
    """Compact JSON, keys in insertion order: the exact text frozen into a delivery."""
    return orjson.dumps(value).decode()


def check_template(text: Any, path: str) -> str:
    """Refuse a template that does not parse, naming where it is."""
    if not isinstance(text, str):
        raise _fail(path, "a text template")
    try:
        _compiled(text)
    except TemplateSyntaxError as exc:
        raise _fail(path, f"a template that parses (line {exc.lineno}: {exc.message})") from exc
    return text


@lru_cache(maxsize=512)
def _simple(text: str) -> tuple[tuple[bool, str], ...] | None:
    """A template that only prints plain names ("Batch {{ batchnumber_ }}") as (is_name, text)
    parts, rendered without Jinja's per-call context set-up; None for anything else."""
    try:
        tree = _env.parse(text)
    except TemplateSyntaxError:
        return None
    parts: list[tuple[bool, str]] = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append((False, child.data))
            elif isinstance(child, nodes.Name) and child.ctx == "load" and child.name not in _env.globals:
                parts.append((True, child.name))
            else:
                return None
    return tuple(parts)


def _print(value: Any) -> str:
    # As Jinja prints with this environment: missing and None as nothing, the rest by str().
    return "" if value is None else str(value)


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render a template; PayloadError for anything that goes wrong inside it. A NUL character in
    the text (a literal "\\x00" in the template, or a value stored before NUL was refused) comes
    out as U+FFFD: PostgreSQL cannot store it, and the chained write or e-mail it went into failed
    the result's own write with a 500."""
    simple = _simple(text)
    if simple is not None:
        return json_text.without_nul(
            "".join([_print(context.get(part)) if is_name else part for is_name, part in simple])
        )
    try:
        return json_text.without_nul(_bounded_render(_compiled(text), context))
    except PayloadError:
        raise
    except TemplateError as exc:
        raise PayloadError(f"template error: {exc}") from exc
    except Exception as exc:  # a user's template must never crash the change that triggered it
        raise PayloadError(f"template error: {type(exc).__name__}: {exc}") from exc


def _bounded_render(template: Template, context: Mapping[str, Any]) -> str:
    parts: list[str] = []
    size = 0
    token = _steps.set([MAX_LOOP_STEPS])
    try:
        for part in template.generate(dict(context)):
            size += len(part)
            if size > MAX_RENDERED_CHARS:
                raise PayloadError(f"template error: it renders more than {MAX_RENDERED_CHARS:,} characters")
            parts.append(part)
    finally:
        _steps.reset(token)
    return "".join(parts)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """A constant stays as it is; a string is a template (used by update_result and transfer)."""
    return render_text(value, context) if isinstance(value, str) and "{" in value else value


def build_context(
    result: Mapping[str, Any] | None,
    *,
    actor: str,
    action: str,
    set_info: Mapping[str, Any],
    workflow: Mapping[str, Any],
    changes: Mapping[str, Any] | None,
    result_version: int | None = None,
    due_at: datetime | None = None,
) -> dict[str, Any]:
    """The template variables: the result's values by name, plus actor, action, set, workflow,
    changes, result_version and due_at (a ``date`` firing's due time, ISO 8601 UTC).

    The last two came later: a field of the same name keeps its place, so that a template written
    before them prints what it printed."""
    context: dict[str, Any] = dict(result or {})
    context.update(
        result=dict(result or {}),
        actor=actor,
        action=action,
        set=dict(set_info),
        workflow=dict(workflow),
        changes=dict(changes or {}),
    )
    context.setdefault("result_version", result_version)
    context.setdefault("due_at", None if due_at is None else format_iso(due_at))
    return context


def envelope(
    *,
    action: str,
    subject: str,
    message: str,
    result: Mapping[str, Any] | None,
    changes: Mapping[str, Any] | None,
    set_info: Mapping[str, Any],
    workflow: Mapping[str, Any],
    event_id: str,
    occurred_at: datetime,
    result_version: int | None = None,
    due_at: str | None = None,
) -> dict[str, Any]:
    """The default body; action/subject/message/results are what the original's receivers expect.
    ``result_version`` is the version of the result the body shows (a deletion's is one more than
    the result's last): a receiver keeps, per result, the body with the highest. ``due_at`` (a
    ``date`` firing's due time) is added only when given."""
    body = {
        "action": action,
        "subject": subject,
        "message": message,
        "results": dict(result or {}),
        "changes": dict(changes or {}),
        "set": {"id": set_info["id"], "name": set_info["name"]},
        "workflow": {"id": workflow["id"], "name": workflow["name"]},
        "event_id": event_id,
        "occurred_at": occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result_version": result_version,
    }
    if due_at is not None:
        body["due_at"] = due_at
    return body


def render_body(
    config: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    event_id: str,
    occurred_at: datetime,
    result_version: int | None = None,
    due_at: datetime | None = None,
) -> str:
    """The webhook body for a signal ``config`` as frozen JSON text; PayloadError on template errors.
    ``result_version`` and ``due_at`` go into the envelope (the context may hold fields of those
    names)."""
    kind = config.get("payload", "envelope")
    result = context.get("result") or {}
    if kind == "result":
        return dumps(result)
    if kind == "template":
        rendered = render_text(str(config.get("body_template") or ""), context)
        try:
            # A key the data repeats keeps its last value, as before: refusing it here would stop a
            # saved workflow's deliveries (the template's own keys were checked when it was saved).
            parsed = json_text.loads(rendered, repeated_keys=True)
        except ValueError as exc:
            refusal = json_text.refused(getattr(exc, "msg", ""))
            if refusal is not None:  # e.g. an integer beyond 64 bits, from "| int" on 1e308
                where, expected = refusal
                raise PayloadError(
                    f"body_template produced JSON qhook cannot send: {expected} expected at {where}"
                ) from exc
            raise PayloadError(f"body_template did not produce JSON: {exc}") from exc
        return dumps(parsed)
    subject = render_text(str(config.get("subject") or ""), context)
    message = render_text(str(config.get("message") or ""), context)
    body = envelope(
        action=str(context["action"]),
        subject=subject,
        message=message,
        result=result,
        changes=context.get("changes"),
        set_info=context["set"],
        workflow=context["workflow"],
        event_id=event_id,
        occurred_at=occurred_at,
        result_version=result_version,
        due_at=None if due_at is None else format_iso(due_at),
    )
    return dumps(body)


# --- many bodies of the same shape (storeResults fan-out) ----------------------------------------
#
# A storeResults call renders thousands of envelope bodies that differ only in a few parts. Built
# as ``render_body`` does, each one needed a template context, an envelope dict, a timestamp and a
# full serialisation; here the parts shared by an event's bodies are serialised once per event
# and a body is joined from JSON fragments. orjson writes compact JSON whose nested values
# serialise the same wherever they appear, so the text is byte for byte ``render_body``'s
# (tests/unit/test_payload_plans.py checks it).

# result_version and due_at yield to a field of that name (see build_context); due_at has no value
# here otherwise: the plans serve new and modified events only (storeResults).
_RESERVED = ("result", "actor", "action", "set", "workflow", "changes", "result_version", "due_at")
_TEXT, _FIELD, _ACTOR, _ACTION, _RESULT, _CHANGES, _VERSION, _DUE = range(8)
_NAMED = {
    "actor": _ACTOR,
    "action": _ACTION,
    "result": _RESULT,
    "changes": _CHANGES,
    "result_version": _VERSION,
    "due_at": _DUE,
}


@dataclass(frozen=True, slots=True)
class EventView:
    """What every body of one event shares; ``result_json``/``changes_json`` are the flat result
    and the changes as ``dumps`` writes them (the event row stores the same text)."""

    action: str
    actor: str
    result: Mapping[str, Any]
    changes: Mapping[str, Any]
    result_json: str
    changes_json: str
    tail: str  # ',"event_id":..,"occurred_at":..,"result_version":..}'
    result_version: int | None


def event_view(
    result: Mapping[str, Any] | None,
    *,
    action: str,
    actor: str,
    changes: Mapping[str, Any] | None,
    event_id: str,
    occurred_at: datetime,
    result_json: str | None = None,
    changes_json: str | None = None,
    result_version: int | None = None,
) -> EventView:
    """The shared parts of an event's bodies; pass JSON texts already made to skip serialising."""
    shown = result or {}
    changed = changes or {}
    stamp = occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return EventView(
        action=action,
        actor=actor,
        result=shown,
        changes=changed,
        result_json=result_json if result_json is not None else dumps(dict(shown)),
        changes_json=changes_json if changes_json is not None else dumps(dict(changed)),
        tail=(
            f',"event_id":{dumps(event_id)},"occurred_at":{dumps(stamp)}'
            f',"result_version":{dumps(result_version)}}}'
        ),
        result_version=result_version,
    )


Part = tuple[int, str]


def _plain_parts(
    text: str, set_info: Mapping[str, Any], workflow: Mapping[str, Any]
) -> tuple[Part, ...] | None:
    """A simple template (``_simple``) with each name resolved as ``build_context`` would."""
    simple = _simple(text)
    if simple is None:
        return None
    parts: list[Part] = []
    for is_name, part in simple:
        if not is_name:
            parts.append((_TEXT, part))
        elif part == "set":
            parts.append((_TEXT, _print(dict(set_info))))
        elif part == "workflow":
            parts.append((_TEXT, _print(dict(workflow))))
        elif part in _RESERVED:
            parts.append((_NAMED[part], part))
        else:
            parts.append((_FIELD, part))
    return tuple(parts)


def _render_parts(parts: tuple[Part, ...], view: EventView) -> str:
    out: list[str] = []
    for kind, text in parts:
        if kind == _TEXT:
            out.append(text)
        elif kind == _FIELD:
            value = view.result.get(text)
            out.append("" if value is None else str(value))
        elif kind == _ACTOR:
            out.append(_print(view.actor))
        elif kind == _ACTION:
            out.append(_print(view.action))
        elif kind == _RESULT:
            out.append(str(dict(view.result)))
        elif kind == _VERSION:
            out.append(_print(view.result.get(text, view.result_version)))
        elif kind == _DUE:
            out.append(_print(view.result.get(text)))
        else:
            out.append(str(dict(view.changes)))
    return json_text.without_nul("".join(out))  # as render_text


@dataclass(frozen=True, slots=True)
class BodyPlan:
    """A webhook signal's body prepared once for many events (see ``body_plan``)."""

    whole_result: bool  # payload "result": the body is the flat result alone
    subject: tuple[Part, ...]
    message: tuple[Part, ...]
    middle: str  # ',"set":{..},"workflow":{..}'

    def render(self, view: EventView) -> str:
        """The body ``render_body`` gives for this signal and event, byte for byte."""
        if self.whole_result:
            return view.result_json
        return "".join(
            [
                '{"action":',
                dumps(view.action),
                ',"subject":',
                dumps(_render_parts(self.subject, view)),
                ',"message":',
                dumps(_render_parts(self.message, view)),
                ',"results":',
                view.result_json,
                ',"changes":',
                view.changes_json,
                self.middle,
                view.tail,
            ]
        )


def body_plan(
    config: Mapping[str, Any], *, set_info: Mapping[str, Any], workflow: Mapping[str, Any]
) -> BodyPlan | None:
    """The plan of a signal's body, or None when only ``render_body`` can make it (a body
    template, or a subject or message that is more than plain names)."""
    kind = config.get("payload", "envelope")
    if kind == "result":
        return BodyPlan(True, (), (), "")
    if kind == "template":
        return None
    subject = _plain_parts(str(config.get("subject") or ""), set_info, workflow)
    message = _plain_parts(str(config.get("message") or ""), set_info, workflow)
    if subject is None or message is None:
        return None
    middle = (
        f',"set":{dumps({"id": set_info["id"], "name": set_info["name"]})}'
        f',"workflow":{dumps({"id": workflow["id"], "name": workflow["name"]})}'
    )
    return BodyPlan(False, subject, message, middle)


_SAMPLES: dict[str, Any] = {
    "text": "sample",
    "number": 1.5,
    "integer": 1,
    "boolean": True,
    "date": "2025-01-31",
    "datetime": "2025-01-31 12:00:00",
}


def sample_result(fields: Sequence[FieldLike]) -> dict[str, Any]:
    """A plausible flat result for checking templates when a workflow is saved."""
    sample: dict[str, Any] = {"@id": 1, "date": "2025-01-31 12:00:00"}
    for field in fields:
        if field.type == "list":
            labels = [getattr(o, "label", "") for o in field.options]
            sample[field.name] = labels[0] if labels else "option"
        else:
            sample[field.name] = _SAMPLES.get(field.type, "sample")
    return sample


def check_body_template(text: Any, path: str, fields: Sequence[FieldLike]) -> str:
    """A JSON body template must parse and, rendered with a sample result, produce JSON."""
    check_template(text, path)
    context = build_context(
        sample_result(fields),
        actor="sample",
        action="new",
        set_info={"id": 1, "name": "sample"},
        workflow={"id": 1, "name": "sample"},
        changes={},
        result_version=1,
    )
    try:
        json_text.loads(render_text(text, context))
    except PayloadError as exc:
        raise _fail(path, f"a template that renders ({exc})") from exc
    except ValueError as exc:
        raise _fail(path, f"a template producing JSON with a sample result ({exc})") from exc
    return str(text)
