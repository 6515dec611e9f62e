"""Whole-document workflow validation (webhook defaults and limits, chained signals) and overlaps."""

from __future__ import annotations

from typing import Any

import pytest

from qhook.domain.fields import FieldDef
from qhook.domain.workflows import (
    WEBHOOK_DEFAULTS,
    OverlapView,
    overlaps,
    parse_workflow,
    simple_url_check,
    transfer_set_ids,
)
from qhook.errors import ValidationFailed

FIELDS = [
    FieldDef(1, "batch_", "Batch", "text", True, True, 1),
    FieldDef(2, "ph_", "pH", "number", False, True, 2),
]
OTHER = {7: [FieldDef(9, "code_", "Code", "text", True, True, 1)]}


def parse(**doc: Any) -> Any:
    base = {"name": "w", "set_id": 1, **doc}
    return parse_workflow(
        base, FIELDS, other_sets=OTHER, check_url=lambda u: simple_url_check(u, allow_http=False)
    )


def test_webhook_defaults_and_secret_kept_out_of_config() -> None:
    secret = "whsec_" + "B" * 32
    spec = parse(signals=[{"type": "webhook", "url": "https://erp.example.com/x", "secret": secret}])
    [signal] = spec.signals
    assert signal.secret == secret
    assert "secret" not in signal.config
    assert signal.config == {"url": "https://erp.example.com/x", **WEBHOOK_DEFAULTS}
    assert spec.active is True and spec.filter is None


def test_full_webhook_signal() -> None:
    raw = {
        "type": "webhook",
        "url": "https://erp.example.com/api/batches",
        "auth_profile_id": 2,
        "payload": "envelope",
        "subject": "s",
        "message": "m",
        "headers": {"X-Plant": "Venlo"},
        "timeout_s": 60,
        "max_attempts": 50,
        "max_age": "PT6H",
        "ordered": True,
        "rate_limit": "30/minute",
        "max_in_flight": 100,
    }
    [signal] = parse(signals=[raw]).signals
    assert signal.config == {**{k: v for k, v in raw.items() if k != "type"}, "body_template": None}


@pytest.mark.parametrize(
    ("signal", "place"),
    [
        ({"type": "webhook", "url": "http://plain.example.com"}, "signals[0].url"),
        (
            {"type": "webhook", "url": "https://x.example.com", "headers": {"webhook-id": "x"}},
            "signals[0].headers.webhook-id",
        ),
        ({"type": "webhook", "url": "https://x.example.com", "secret": "nope"}, "signals[0].secret"),
        # Names ignore case: one of the two was silently not sent.
        (
            {"type": "webhook", "url": "https://x.example.com", "headers": {"X-A": "v", "x-a": "w"}},
            "signals[0].headers.x-a",
        ),
        ({"type": "webhook", "url": "https://x.example.com", "headers": []}, "signals[0].headers"),
        (
            {"type": "webhook", "url": "https://x.example.com", "headers": {"X-Big": "v" * 4001}},
            "signals[0].headers.X-Big",
        ),
        ({"type": "webhook", "url": "https://x.example.com", "payload": "xml"}, "signals[0].payload"),
        ({"type": "webhook", "url": "https://x.example.com", "ordered": "yes"}, "signals[0].ordered"),
        ({"type": "webhook", "url": "https://x.example.com", "max_age": "-P1D"}, "signals[0].max_age"),
        ({"type": "webhook", "url": "https://x.example.com", "surprise": 1}, "signals[0].surprise"),
        ({"type": "pigeon"}, "signals[0].type"),
        ({"type": "update_result", "values": {}}, "signals[0].values"),
        ({"type": "update_result", "values": {"ph_": [1]}}, "signals[0].values.ph_"),
        (
            {"type": "transfer", "set_id": 7, "key_field": "code_", "values": {"code_": "x", "batch_": "y"}},
            "signals[0].values.batch_",
        ),
        ({"type": "transfer", "set_id": 7, "key_field": "code_", "values": {}}, "signals[0].values"),
        (
            {"type": "transfer", "set_id": 7, "key_field": "nope_", "values": {"code_": "x"}},
            "signals[0].key_field",
        ),
        ({"type": "email", "to": "nobody"}, "signals[0].to"),
    ],
)
def test_signal_errors_name_the_place(signal: dict[str, Any], place: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse(signals=[signal])
    assert caught.value.details[0]["field"] == place


def test_chained_signals_and_transfer_sets() -> None:
    doc = {
        "signals": [
            {"type": "update_result", "values": {"ph_": 7, "batch_": "{{ batch_ }}-x"}},
            {"type": "transfer", "set_id": 7, "key_field": "code_", "values": {"code_": "{{ batch_ }}"}},
            {"type": "email", "to": "qa@example.com", "subject": "{{ batch_ }}"},
        ]
    }
    spec = parse(**doc)
    assert [s.type for s in spec.signals] == ["update_result", "transfer", "email"]
    assert spec.signals[1].config == {"set_id": 7, "key_field": "code_", "values": {"code_": "{{ batch_ }}"}}
    assert transfer_set_ids({"signals": doc["signals"]}) == {7}


def test_top_level_errors() -> None:
    for doc, place in (
        ({"name": ""}, "name"),
        ({"active": "no"}, "active"),
        ({"error_email": "x"}, "error_email"),
        ({"colour": "red"}, "colour"),
        (
            {
                "signals": [
                    {"type": "email", "to": "a@b.c", "id": 1},
                    {"type": "email", "to": "a@b.c", "id": 1},
                ]
            },
            "signals",
        ),
    ):
        with pytest.raises(ValidationFailed) as caught:
            parse(**doc)
        assert caught.value.details[0]["field"] == place


def view(
    id_: int, actions: set[str], urls: set[str], filter_: Any = None, active: bool = True
) -> OverlapView:
    return OverlapView(id_, f"w{id_}", active, frozenset(actions), filter_, frozenset(urls))


def test_overlaps() -> None:
    mine = view(1, {"new", "modified"}, {"https://a/x"}, {"field": "ph_", "op": "empty"})
    assert overlaps(mine, [mine]) == []
    assert len(overlaps(mine, [view(2, {"new"}, {"https://a/x"})])) == 1
    assert len(overlaps(mine, [view(2, {"new"}, {"https://a/x"}, {"field": "ph_", "op": "empty"})])) == 1
    assert overlaps(mine, [view(2, {"new"}, {"https://a/x"}, {"field": "ph_", "op": "not_empty"})]) == []
    assert overlaps(mine, [view(2, {"deleted"}, {"https://a/x"})]) == []
    assert overlaps(mine, [view(2, {"new"}, {"https://b/x"})]) == []
    assert overlaps(mine, [view(2, {"new"}, {"https://a/x"}, active=False)]) == []
