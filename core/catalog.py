"""The model catalog: model names and aliases -> deployments with prices and limits.

Owns: what models exist, who serves each (provider + upstream model name), what a token
costs there (USD per 1M tokens, Decimal), context window and output limits, capabilities,
routing weight, and which other models a request may fall back to.

Rules:
- The catalog is data, not code: `catalog_from_data` parses a TOML-shaped mapping
  (the default lives in `core/default_catalog.toml`; operators override it from config
  through `merge_catalog_data`). Every field is validated; a bad one raises `ValueError`
  naming its path, e.g. "models.gpt-4.1.deployments[0].price.input must be a decimal
  string".
- A name resolves through `aliases` first, then `models`; an unknown name is
  `UnknownModel` with param "model".
- `candidates(name)` is the model's own deployments, then those of each fallback model
  in order, without duplicates.

The data shape (TOML)::

    [models."gpt-4.1"]
    owned_by = "openai"              # required string
    created = 1744675200             # required int, unix seconds (>= 0)
    fallbacks = ["claude-sonnet-4"]  # optional; model ids or aliases, tried in order

    [[models."gpt-4.1".deployments]] # at least one
    provider = "openai"              # required provider label
    upstream_model = "gpt-4.1"       # required: the name sent to the provider
    id = "openai/gpt-4.1"            # optional; default "<provider>/<upstream_model>"
    context_window = 1047576         # required int > 0
    max_output_tokens = 32768        # required int > 0, <= context_window
    capabilities = ["tools", "vision", "json"]   # optional list of strings
    weight = 1                       # optional int >= 0: share under the weighted strategy

    [models."gpt-4.1".deployments.price]   # USD per 1M tokens
    input = "2.00"                   # required decimal string (or int), >= 0
    output = "8.00"                  # required
    cached_input = "0.50"            # optional (absent: cached reads bill as input)
    cache_write = "3.75"             # optional (absent: cache writes bill as input)
    version = "2025-07"              # optional price-list label, default "default"

    [aliases]
    smart = "gpt-4.1"                # alias -> model id (no chains, no shadowing)

Prices are strings so they parse to `Decimal` exactly; floats are rejected because
`0.1` in binary is not 0.1. Unknown keys are rejected, so a typo never silently vanishes.
Deployment ids are unique across the whole catalog.

Overrides (`merge_catalog_data(base, override)`), e.g. from an operator's config file:
- a model in `override.models` that `base` lacks is added whole;
- for a model `base` has, its scalar fields (`owned_by`, `created`, `fallbacks`) are
  replaced; each override deployment is matched by id (its `id`, else
  `<provider>/<upstream_model>`): a match has its fields replaced (and its `price` table
  merged key by key), an unmatched one is appended;
- `remove = true` on a model or deployment removes it; fallbacks and aliases that pointed
  at a removed model are dropped with it;
- `override.aliases` entries are added or replace base entries.
The merged dict is then validated by `catalog_from_data` like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

from attrs import evolve, field, frozen

from core.errors import UnknownModel


@frozen
class Price:
    """USD per 1M tokens. `version` names the price list, recorded on every ledger row."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    version: str = "default"


@frozen
class Deployment:
    id: str  # "<provider>/<upstream_model>" unless configured otherwise
    model: str  # the catalog model this deployment serves
    provider: str  # provider label: "openai", "anthropic", "mock", or a configured name
    upstream_model: str
    price: Price
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str] = frozenset()
    weight: int = 1


@frozen
class ModelEntry:
    id: str
    owned_by: str
    created: int
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...] = ()


@frozen
class Catalog:
    models: Mapping[str, ModelEntry] = field(factory=dict)
    aliases: Mapping[str, str] = field(factory=dict)
    # model or alias name -> why this gateway cannot answer it (set by restrict_to_providers)
    unserved: Mapping[str, str] = field(factory=dict)

    def resolve(self, name: str) -> ModelEntry:
        entry = self.models.get(self.aliases.get(name, name))
        if entry is None:
            why = self.unserved.get(name)
            raise UnknownModel(why or f"The model '{name}' does not exist", param="model")
        return entry

    def candidates(self, name: str) -> tuple[Deployment, ...]:
        entry = self.resolve(name)
        seen: dict[str, Deployment] = {d.id: d for d in entry.deployments}
        for fallback in entry.fallbacks:
            for d in self.resolve(fallback).deployments:
                seen.setdefault(d.id, d)
        return tuple(seen.values())


# ---- parsing -------------------------------------------------------------------------

_TOP_KEYS = frozenset({"models", "aliases"})
_MODEL_KEYS = frozenset({"owned_by", "created", "fallbacks", "deployments"})
_DEPLOYMENT_KEYS = frozenset(
    {"id", "provider", "upstream_model", "context_window", "max_output_tokens",
     "capabilities", "weight", "price"}
)
_PRICE_KEYS = frozenset({"input", "output", "cached_input", "cache_write", "version"})


def _table(value: object, path: str, allowed: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path} must be a table")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"{path} has a non-string key {key!r}")
        if allowed and key not in allowed:
            raise ValueError(f"{path}.{key} is not a known field (expected one of "
                             f"{', '.join(sorted(allowed))})")
    return value


def _required(table: Mapping[str, object], key: str, path: str) -> object:
    if key not in table:
        raise ValueError(f"{path}.{key} is required")
    return table[key]


def _string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path} must be a non-empty string")
    return value


def _int(value: object, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path} must be an integer")
    if value < minimum:
        raise ValueError(f"{path} must be >= {minimum}")
    return value


def _strings(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{path} must be a list of strings")
    return tuple(_string(item, f"{path}[{i}]") for i, item in enumerate(value))


def _decimal(value: object, path: str) -> Decimal:
    """A non-negative finite price from a decimal string (or an int); never a float."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{path} must be a decimal string (floats are rejected: binary "
                         "rounding), e.g. \"2.50\"")
    try:
        parsed = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError(f"{path} must be a decimal string, not {value!r}") from None
    if not parsed.is_finite() or parsed < 0:
        raise ValueError(f"{path} must be a finite, non-negative decimal, not {value!r}")
    return parsed


def _price(value: object, path: str) -> Price:
    table = _table(value, path, _PRICE_KEYS)
    optional = {
        key: None if key not in table else _decimal(table[key], f"{path}.{key}")
        for key in ("cached_input", "cache_write")
    }
    return Price(
        input=_decimal(_required(table, "input", path), f"{path}.input"),
        output=_decimal(_required(table, "output", path), f"{path}.output"),
        cached_input=optional["cached_input"],
        cache_write=optional["cache_write"],
        version=_string(table.get("version", "default"), f"{path}.version"),
    )


def _deployment(model: str, value: object, path: str) -> Deployment:
    table = _table(value, path, _DEPLOYMENT_KEYS)
    provider = _string(_required(table, "provider", path), f"{path}.provider")
    upstream = _string(_required(table, "upstream_model", path), f"{path}.upstream_model")
    window = _int(_required(table, "context_window", path), f"{path}.context_window", 1)
    max_out = _int(_required(table, "max_output_tokens", path), f"{path}.max_output_tokens", 1)
    if max_out > window:
        raise ValueError(f"{path}.max_output_tokens must be <= context_window ({window})")
    return Deployment(
        id=_string(table.get("id", f"{provider}/{upstream}"), f"{path}.id"),
        model=model,
        provider=provider,
        upstream_model=upstream,
        price=_price(_required(table, "price", path), f"{path}.price"),
        context_window=window,
        max_output_tokens=max_out,
        capabilities=frozenset(_strings(table.get("capabilities", []), f"{path}.capabilities")),
        weight=_int(table.get("weight", 1), f"{path}.weight", 0),
    )


def _model(model_id: str, value: object, path: str) -> ModelEntry:
    table = _table(value, path, _MODEL_KEYS)
    raw = _required(table, "deployments", path)
    if isinstance(raw, str | Mapping) or not isinstance(raw, Sequence) or not raw:
        raise ValueError(f"{path}.deployments must be a non-empty list of tables")
    return ModelEntry(
        id=model_id,
        owned_by=_string(_required(table, "owned_by", path), f"{path}.owned_by"),
        created=_int(_required(table, "created", path), f"{path}.created", 0),
        deployments=tuple(
            _deployment(model_id, d, f"{path}.deployments[{i}]") for i, d in enumerate(raw)
        ),
        fallbacks=_strings(table.get("fallbacks", []), f"{path}.fallbacks"),
    )


def _check_references(models: Mapping[str, ModelEntry], aliases: Mapping[str, str]) -> None:
    for name, target in aliases.items():
        if name in models:
            raise ValueError(f"aliases.{name} shadows the model of the same name")
        if target not in models:
            raise ValueError(f"aliases.{name} points at unknown model '{target}'")
    owners: dict[str, str] = {}
    for entry in models.values():
        for i, d in enumerate(entry.deployments):
            if d.id in owners:
                raise ValueError(f"models.{entry.id}.deployments[{i}].id '{d.id}' is already "
                                 f"used by model '{owners[d.id]}'")
            owners[d.id] = entry.id
        for i, fallback in enumerate(entry.fallbacks):
            target = aliases.get(fallback, fallback)
            if target not in models:
                raise ValueError(f"models.{entry.id}.fallbacks[{i}] names unknown model "
                                 f"'{fallback}'")
            if target == entry.id:
                raise ValueError(f"models.{entry.id}.fallbacks[{i}] falls back to itself")


def catalog_from_data(data: Mapping[str, object]) -> Catalog:
    """Parse and validate a TOML-shaped catalog (see the module docstring for the shape)."""
    top = _table(data, "catalog", _TOP_KEYS)
    raw_models = _table(top.get("models", {}), "models", frozenset())
    models = {
        model_id: _model(_string(model_id, "models key"), value, f"models.{model_id}")
        for model_id, value in raw_models.items()
    }
    raw_aliases = _table(top.get("aliases", {}), "aliases", frozenset())
    aliases = {
        _string(name, "aliases key"): _string(target, f"aliases.{name}")
        for name, target in raw_aliases.items()
    }
    _check_references(models, aliases)
    return Catalog(models=models, aliases=aliases)


# ---- operator overrides ----------------------------------------------------------------


def _clone(value: object) -> object:
    """A deep copy of TOML-shaped data (tables become dicts, arrays lists)."""
    if isinstance(value, Mapping):
        return _clone_table(value)
    if isinstance(value, list | tuple):
        return [_clone(item) for item in value]
    return value


def _clone_table(value: Mapping[str, object]) -> dict[str, object]:
    return {key: _clone(item) for key, item in value.items()}


def _deployment_key(value: Mapping[str, object]) -> object:
    explicit = value.get("id")
    if explicit is not None:
        return explicit
    return f"{value.get('provider')}/{value.get('upstream_model')}"


def _merge_deployments(base: object, override: object, path: str) -> list[object]:
    merged: list[object] = [_clone(d) for d in base] if isinstance(base, list) else []
    if isinstance(override, str | Mapping) or not isinstance(override, Sequence):
        raise ValueError(f"{path} must be a list of tables")
    for i, item in enumerate(override):
        change = _table(item, f"{path}[{i}]", frozenset())
        key = _deployment_key(change)
        index = next(
            (j for j, d in enumerate(merged)
             if isinstance(d, Mapping) and _deployment_key(d) == key),
            None,
        )
        if change.get("remove") is True:
            if index is not None:
                del merged[index]
            continue
        if index is None:
            merged.append(_clone(change))
            continue
        current = merged[index]
        target = dict(current) if isinstance(current, Mapping) else {}
        for field_name, value in change.items():
            old = target.get(field_name)
            if field_name == "price" and isinstance(old, Mapping) and isinstance(value, Mapping):
                target[field_name] = {**old, **_clone_table(value)}
            else:
                target[field_name] = _clone(value)
        merged[index] = target
    return merged


def merge_catalog_data(
    base: Mapping[str, object], override: Mapping[str, object]
) -> dict[str, object]:
    """Apply an operator's override to a base catalog dict; returns a new dict.

    Neither input is modified. The result still needs `catalog_from_data` to validate it.
    """
    result: dict[str, object] = _clone_table(base)
    models = dict(_table(result.get("models", {}), "models", frozenset()))
    aliases = dict(_table(result.get("aliases", {}), "aliases", frozenset()))
    removed: set[str] = set()
    for model_id, value in _table(override.get("models", {}), "models", frozenset()).items():
        path = f"models.{model_id}"
        change = _table(value, path, frozenset())
        if change.get("remove") is True:
            models.pop(model_id, None)
            removed.add(model_id)
            continue
        old = models.get(model_id)
        if not isinstance(old, Mapping):
            models[model_id] = _clone(change)
            continue
        merged = dict(old)
        for key, new in change.items():
            if key == "deployments":
                merged[key] = _merge_deployments(old.get(key), new, f"{path}.deployments")
            else:
                merged[key] = _clone(new)
        models[model_id] = merged
    aliases.update(_clone_table(_table(override.get("aliases", {}), "aliases", frozenset())))
    if removed:
        gone = removed | {name for name, target in aliases.items() if target in removed}
        aliases = {k: v for k, v in aliases.items() if k not in gone}
        for model_id, value in models.items():
            if isinstance(value, Mapping) and isinstance(value.get("fallbacks"), list):
                kept = [f for f in value["fallbacks"] if f not in gone]
                models[model_id] = {**value, "fallbacks": kept}
    for key, value in override.items():
        if key not in ("models", "aliases"):
            result[key] = _clone(value)
    result["models"] = models
    result["aliases"] = aliases
    return result


# ---- serving what is configured --------------------------------------------------------


def restrict_to_providers(
    catalog: Catalog, labels: frozenset[str], how_to_add: Mapping[str, str] | None = None
) -> Catalog:
    """The catalog as far as the given provider labels can serve it.

    Deployments of other providers are dropped; a model left without deployments is
    dropped, and so are fallbacks and aliases that pointed at it. So a gateway with only
    an OpenAI key never plans an attempt at Anthropic (which would only fail and waste the
    request's retries), and `/v1/models` lists only what can be answered.

    A dropped model (or alias) is remembered in `unserved` with a message naming the
    providers that would serve it, the configured ones, and `how_to_add[provider]` (a
    sentence on how to configure it); `resolve` raises UnknownModel with that message.
    """
    served = {
        model_id: tuple(d for d in entry.deployments if d.provider in labels)
        for model_id, entry in catalog.models.items()
    }
    aliases = {name: target for name, target in catalog.aliases.items() if served.get(target)}
    models = {
        model_id: evolve(
            entry,
            deployments=served[model_id],
            fallbacks=tuple(f for f in entry.fallbacks if served.get(aliases.get(f, f))),
        )
        for model_id, entry in catalog.models.items()
        if served[model_id]
    }
    dropped = {model_id for model_id, kept in served.items() if not kept}
    names = [(m, m) for m in sorted(dropped)]
    names += [(a, t) for a, t in sorted(catalog.aliases.items()) if t in dropped]
    unserved = {
        name: _unserved_message(name, catalog.models[target], labels, how_to_add or {})
        for name, target in names
    }
    return Catalog(models=models, aliases=aliases, unserved={**catalog.unserved, **unserved})


def _unserved_message(
    name: str, entry: ModelEntry, labels: frozenset[str], how_to_add: Mapping[str, str]
) -> str:
    wanted = sorted({d.provider for d in entry.deployments})
    configured = ", ".join(sorted(labels - {"mock"})) or "none"
    hints = "".join(f" {how_to_add[p]}" for p in wanted if p in how_to_add)
    return (
        f"The model '{name}' is served by {' or '.join(wanted)}, which this gateway has not "
        f"configured (configured providers: {configured}).{hints}"
    )
