"""Every /api/v1 router, in the order they appear in the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from qhook.api.v1 import audit as audit_api
from qhook.api.v1 import auth_profiles as auth_profiles_api
from qhook.api.v1 import deliveries as deliveries_api
from qhook.api.v1 import emails as emails_api
from qhook.api.v1 import endpoints as endpoints_api
from qhook.api.v1 import events, inspector, results, sets, users
from qhook.api.v1 import send_test as send_test_api
from qhook.api.v1 import stats as stats_api
from qhook.api.v1 import workflows as workflows_api

ALL: list[APIRouter] = [users.router, inspector.router, sets.router, results.router, events.router]
ALL += [deliveries_api.router, endpoints_api.router, stats_api.router, audit_api.router]
ALL += [workflows_api.router]
ALL += [auth_profiles_api.router]
ALL += [send_test_api.router, emails_api.router]
