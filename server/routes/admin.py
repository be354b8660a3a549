"""The admin API: keys over HTTP, the whole ledger, and each deployment's health.

Owns: `POST/GET /v1/admin/keys`, `GET/PATCH /v1/admin/keys/{id}`,
`POST /v1/admin/keys/{id}/revoke`, `GET /v1/admin/requests` and
`GET /v1/admin/providers`, and the validation of their bodies.

Rules:
- Every route needs an admin key (`server.auth.require_admin`): a tenant key gets 403.
- Every call writes one audit line (`adapters.admin.audit`): who, what, which key, the
  fields changed; never a key or its hash.
- The plain key is in the answer to `POST /v1/admin/keys` and nowhere else, ever.
- Bad input is a 400 in the OpenAI error shape whose `param` names the field; an unknown
  key id is a 404 naming `id`.
- A revoked key cannot be changed (409); revoking twice keeps the first time.
- Health is this process's view (`HealthBook` is per process, on purpose).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from adapters import admin
from adapters.storage import codec
from adapters.storage.records import KeyRecord
from core.billing import format_usd
from core.errors import Conflict, NotFound
from server import ledger_params as params
from server.auth import require_admin
from server.http import json_body, to_json
from server.routes.insights import requests_page
from server.services import Services
from server.wire import validate as v

PERIODS = ("day", "month", "total")
MAX_NAME = 128
_CREATE_FIELDS = ("tenant", "project", "name", "rpm", "tpm", "budget_usd", "budget_period", "admin")
_PATCH_FIELDS = ("name", "rpm", "tpm", "budget_usd", "budget_period")
_MAX_LIMIT = 1_000_000_000


def _budget(value: object, param: str) -> Decimal:
    """A non-negative USD amount that storage keeps exactly (at most 10 decimal places)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str | float):
        raise v.wrong_type(value, "a decimal amount of US dollars such as \"25.00\"", param)
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise v.fail(f"'{param}' must be a decimal amount such as \"25.00\", got {value!r}", param) from None
    if not amount.is_finite() or amount < 0:
        raise v.fail(f"'{param}' must be a non-negative amount of US dollars", param)
    try:
        return codec.money(amount)
    except ValueError:
        raise v.fail(f"'{param}' may have at most 10 decimal places and 19 integer digits", param) from None


def _optional(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The change for one nullable field of a body (null clears it), or nothing if absent."""
    if name not in body:
        return {}
    value = body[name]
    if value is None:
        if name == "budget_period":
            raise v.fail("'budget_period' cannot be null", name)
        return {name: None}
    if name == "name":
        return {name: v.string(value, name, max_len=MAX_NAME)}
    if name in ("rpm", "tpm"):
        return {name: v.integer(value, name, minimum=1, maximum=_MAX_LIMIT)}
    if name == "budget_usd":
        return {name: _budget(value, name)}
    return {name: v.one_of(value, PERIODS, name)}


def _label(body: dict[str, Any], name: str) -> str:
    text = v.string(body[name], name, nonempty=True, max_len=MAX_NAME)
    if text != text.strip():
        raise v.fail(f"'{name}' must not start or end with spaces", name)
    return text


def _shown(changes: dict[str, Any]) -> dict[str, Any]:
    """Changed fields for the audit line (money as strings)."""
    return {k: (format_usd(x) if isinstance(x, Decimal) else x) for k, x in changes.items()}


async def _key_answer(services: Services, record: KeyRecord) -> dict[str, Any]:
    return {**admin.key_view(record), "spend": await admin.spend_view(services.gateway.limits, record)}


async def _existing(services: Services, key_id: str) -> KeyRecord:
    record = await services.storage.key_by_id(key_id)
    if record is None:
        raise NotFound(f"No key with id '{key_id}'", param="id")
    return record


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/admin/keys")
    async def create_key() -> Response:
        actor = await require_admin(services)
        body = await json_body()
        v.check_keys(body, "", allowed=_CREATE_FIELDS, required=("tenant", "project"))
        fields: dict[str, Any] = {"tenant": _label(body, "tenant"), "project": _label(body, "project")}
        for name in _PATCH_FIELDS:
            fields.update(_optional(body, name))
        is_admin = v.boolean(body["admin"], "admin") if body.get("admin") is not None else False
        plain, record = await admin.create_key(
            services.storage,
            services.clock,
            tenant=fields["tenant"],
            project=fields["project"],
            name=fields.get("name"),
            rpm=fields.get("rpm"),
            tpm=fields.get("tpm"),
            budget_usd=fields.get("budget_usd"),
            budget_period=fields.get("budget_period") or "month",
            admin=is_admin,
        )
        admin.audit(actor, "key.create", record.id, {**_shown(fields), "admin": is_admin})
        answer = {"key": plain, **await _key_answer(services, record)}
        return Response(to_json(answer), status=201, content_type="application/json")

    @app.get("/v1/admin/keys")
    async def list_keys() -> dict[str, Any]:
        actor = await require_admin(services)
        params.check_params(request.args, ("tenant",))
        tenant = request.args.get("tenant") or None
        records = await services.storage.list_keys(tenant)
        admin.audit(actor, "key.list", None, {"tenant": tenant})
        spend = await admin.spend_views(services.gateway.limits, records)  # one query for all
        return {
            "object": "list",
            "data": [{**admin.key_view(r), "spend": spend[r.id]} for r in records],
        }

    @app.get("/v1/admin/keys/<key_id>")
    async def get_key(key_id: str) -> dict[str, Any]:
        actor = await require_admin(services)
        record = await _existing(services, key_id)
        admin.audit(actor, "key.get", key_id, {})
        return await _key_answer(services, record)

    @app.patch("/v1/admin/keys/<key_id>")
    async def patch_key(key_id: str) -> dict[str, Any]:
        actor = await require_admin(services)
        body = await json_body()
        v.check_keys(body, "", allowed=_PATCH_FIELDS)
        changes: dict[str, Any] = {}
        for name in _PATCH_FIELDS:
            changes.update(_optional(body, name))
        record = await _existing(services, key_id)
        if record.revoked_at is not None:
            raise Conflict(f"Key '{key_id}' is revoked; it cannot be changed", param="id")
        updated = await services.storage.update_key(key_id, changes)
        if updated is None:
            raise NotFound(f"No key with id '{key_id}'", param="id")
        admin.audit(actor, "key.update", key_id, _shown(changes))
        return await _key_answer(services, updated)

    @app.post("/v1/admin/keys/<key_id>/revoke")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        actor = await require_admin(services)
        await _existing(services, key_id)  # by id only: a prefix is not an id here
        revoked = await services.storage.revoke_key(key_id, services.clock.wall())
        if revoked is None:
            raise NotFound(f"No key with id '{key_id}'", param="id")
        admin.audit(actor, "key.revoke", key_id, {})
        return await _key_answer(services, revoked)

    @app.get("/v1/admin/requests")
    async def all_requests() -> dict[str, Any]:
        actor = await require_admin(services)
        page = await requests_page(services, actor)
        admin.audit(actor, "requests.list", None, dict(request.args))
        return page

    @app.get("/v1/admin/providers")
    async def providers() -> dict[str, Any]:
        actor = await require_admin(services)
        gateway = services.gateway
        data = admin.provider_health(gateway.catalog, gateway.health, services.clock.now())
        admin.audit(actor, "providers.list", None, {})
        return {"object": "list", "scope": "process", "data": data}
