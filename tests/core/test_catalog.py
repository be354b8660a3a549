"""Catalog parsing, validation, overrides, and the default catalog file."""

from __future__ import annotations

import copy
import pathlib
import tomllib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.catalog import (
    Catalog,
    Price,
    catalog_from_data,
    merge_catalog_data,
    restrict_to_providers,
)
from core.errors import UnknownModel

DEFAULT_TOML = pathlib.Path(__file__).resolve().parents[2] / "core" / "default_catalog.toml"


def load_default() -> dict[str, Any]:
    with DEFAULT_TOML.open("rb") as f:
        return tomllib.load(f)


def minimal() -> dict[str, Any]:
    return {
        "models": {
            "gpt-4.1": {
                "owned_by": "openai",
                "created": 1744588800,
                "fallbacks": ["claude-sonnet-4"],
                "deployments": [
                    {
                        "provider": "openai",
                        "upstream_model": "gpt-4.1",
                        "context_window": 1047576,
                        "max_output_tokens": 32768,
                        "capabilities": ["tools", "vision"],
                        "price": {"input": "2.00", "output": "8.00", "cached_input": "0.50"},
                    }
                ],
            },
            "claude-sonnet-4": {
                "owned_by": "anthropic",
                "created": 1747872000,
                "deployments": [
                    {
                        "provider": "anthropic",
                        "upstream_model": "claude-sonnet-4-20250514",
                        "context_window": 200000,
                        "max_output_tokens": 64000,
                        "weight": 3,
                        "price": {"input": "3", "output": "15", "cache_write": "3.75",
                                  "version": "v1"},
                    }
                ],
            },
        },
        "aliases": {"smart": "gpt-4.1"},
    }


# ---- the default catalog ----------------------------------------------------------------


def test_default_catalog_parses_with_reference_prices() -> None:
    catalog = catalog_from_data(load_default())
    expected = {
        "gpt-4.1": ("openai", "gpt-4.1", "2.00", "8.00", "0.50", None),
        "gpt-4.1-mini": ("openai", "gpt-4.1-mini", "0.40", "1.60", "0.10", None),
        "gpt-4o": ("openai", "gpt-4o", "2.50", "10.00", "1.25", None),
        "gpt-4o-mini": ("openai", "gpt-4o-mini", "0.15", "0.60", "0.075", None),
        "claude-3.5-sonnet": ("anthropic", "claude-3-5-sonnet-latest", "3", "15", "0.30", "3.75"),
        "claude-sonnet-4": ("anthropic", "claude-sonnet-4-20250514", "3", "15", "0.30", "3.75"),
        "claude-3.5-haiku": ("anthropic", "claude-3-5-haiku-latest", "0.80", "4", "0.08", "1"),
    }
    for model_id, (provider, upstream, inp, out, cached, write) in expected.items():
        (dep,) = catalog.resolve(model_id).deployments
        assert (dep.provider, dep.upstream_model) == (provider, upstream)
        assert dep.id == f"{provider}/{upstream}"
        assert dep.price.input == Decimal(inp) and dep.price.output == Decimal(out)
        assert dep.price.cached_input == Decimal(cached)
        assert dep.price.cache_write == (None if write is None else Decimal(write))
    for mock in ("mock-fast", "mock-smart"):
        assert {d.provider for d in catalog.resolve(mock).deployments} == {"mock"}


def test_default_catalog_falls_back_across_providers() -> None:
    catalog = catalog_from_data(load_default())
    for model_id, entry in catalog.models.items():
        if entry.owned_by == "mock":
            continue
        own = {d.provider for d in entry.deployments}
        assert len(entry.deployments) == 1
        providers = [d.provider for d in catalog.candidates(model_id)]
        assert providers[0] in own and set(providers) - own, model_id
    assert catalog.resolve("smart").id == "gpt-4.1"
    assert catalog.resolve("fast").id == "gpt-4.1-mini"
    assert catalog.resolve("cheap").id == "gpt-4o-mini"
    assert [d.model for d in catalog.candidates("gpt-4.1")][:2] == ["gpt-4.1", "claude-sonnet-4"]
    assert catalog.candidates("claude-3.5-sonnet")[1].model == "gpt-4o"
    assert catalog.candidates("gpt-4.1-mini")[1].model == "claude-3.5-haiku"


# ---- parsing ---------------------------------------------------------------------------


def test_minimal_parses_every_field() -> None:
    catalog = catalog_from_data(minimal())
    gpt = catalog.resolve("smart")
    (dep,) = gpt.deployments
    assert gpt.id == "gpt-4.1" and gpt.owned_by == "openai" and gpt.created == 1744588800
    assert gpt.fallbacks == ("claude-sonnet-4",)
    assert dep.model == "gpt-4.1" and dep.capabilities == frozenset({"tools", "vision"})
    assert dep.weight == 1 and dep.context_window == 1047576 and dep.max_output_tokens == 32768
    assert dep.price == Price(Decimal("2.00"), Decimal("8.00"), Decimal("0.50"), None, "default")
    claude = catalog.resolve("claude-sonnet-4").deployments[0]
    assert claude.weight == 3 and claude.price.version == "v1"
    assert claude.price.cached_input is None and claude.price.cache_write == Decimal("3.75")


def test_explicit_deployment_id_and_candidates_without_duplicates() -> None:
    data = minimal()
    data["models"]["gpt-4.1"]["deployments"][0]["id"] = "primary"
    data["models"]["claude-sonnet-4"]["fallbacks"] = ["smart"]  # an alias is fine
    catalog = catalog_from_data(data)
    assert [d.id for d in catalog.candidates("gpt-4.1")] == [
        "primary", "anthropic/claude-sonnet-4-20250514"]
    assert [d.id for d in catalog.candidates("claude-sonnet-4")] == [
        "anthropic/claude-sonnet-4-20250514", "primary"]


def test_unknown_name_raises_unknown_model() -> None:
    catalog = catalog_from_data(minimal())
    with pytest.raises(UnknownModel) as info:
        catalog.resolve("gpt-9")
    assert info.value.param == "model"
    with pytest.raises(UnknownModel):
        catalog.candidates("nope")


def test_empty_catalog() -> None:
    assert catalog_from_data({}) == Catalog()


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = minimal()
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
_DEP = ("models", "gpt-4.1", "deployments", 0)
_PRICE = (*_DEP, "price")

BAD: list[tuple[tuple[Any, ...], Any, str]] = [
    ((*_PRICE, "input"), 2.0, "models.gpt-4.1.deployments[0].price.input must be a decimal string"),
    ((*_PRICE, "input"), "two", "models.gpt-4.1.deployments[0].price.input must be a decimal"),
    ((*_PRICE, "output"), "-1", "models.gpt-4.1.deployments[0].price.output must be a finite"),
    ((*_PRICE, "output"), "NaN", "price.output must be a finite"),
    ((*_PRICE, "output"), "Infinity", "price.output must be a finite"),
    ((*_PRICE, "cached_input"), True, "price.cached_input must be a decimal string"),
    ((*_PRICE, "output"), _DELETE, "models.gpt-4.1.deployments[0].price.output is required"),
    ((*_PRICE, "currency"), "USD", "price.currency is not a known field"),
    ((*_PRICE, "version"), "", "price.version must be a non-empty string"),
    ((*_DEP, "price"), "2.00", "models.gpt-4.1.deployments[0].price must be a table"),
    ((*_DEP, "provider"), 3, "deployments[0].provider must be a non-empty string"),
    ((*_DEP, "upstream_model"), _DELETE, "deployments[0].upstream_model is required"),
    ((*_DEP, "context_window"), 0, "deployments[0].context_window must be >= 1"),
    ((*_DEP, "context_window"), "8k", "deployments[0].context_window must be an integer"),
    ((*_DEP, "max_output_tokens"), True, "max_output_tokens must be an integer"),
    ((*_DEP, "max_output_tokens"), 2_000_000, "max_output_tokens must be <= context_window"),
    ((*_DEP, "weight"), -1, "deployments[0].weight must be >= 0"),
    ((*_DEP, "capabilities"), "tools", "deployments[0].capabilities must be a list of strings"),
    ((*_DEP, "capabilities"), ["tools", 1], "deployments[0].capabilities[1] must be"),
    ((*_DEP, "regions"), ["us"], "deployments[0].regions is not a known field"),
    (("models", "gpt-4.1", "deployments"), [], "models.gpt-4.1.deployments must be a non-empty"),
    (("models", "gpt-4.1", "deployments"), {"provider": "x"}, "deployments must be a non-empty"),
    (("models", "gpt-4.1", "deployments"), ["x"], "models.gpt-4.1.deployments[0] must be a table"),
    (("models", "gpt-4.1", "owned_by"), _DELETE, "models.gpt-4.1.owned_by is required"),
    (("models", "gpt-4.1", "created"), -5, "models.gpt-4.1.created must be >= 0"),
    (("models", "gpt-4.1", "created"), 1.5, "models.gpt-4.1.created must be an integer"),
    (("models", "gpt-4.1", "fallbacks"), ["gpt-9"], "models.gpt-4.1.fallbacks[0] names unknown"),
    (("models", "gpt-4.1", "fallbacks"), ["smart"], "models.gpt-4.1.fallbacks[0] falls back to"),
    (("models", "gpt-4.1", "fallback"), [], "models.gpt-4.1.fallback is not a known field"),
    (("models", "gpt-4.1"), "openai", "models.gpt-4.1 must be a table"),
    (("models",), [], "models must be a table"),
    (("aliases", "fast"), "gpt-9", "aliases.fast points at unknown model 'gpt-9'"),
    (("aliases", "gpt-4.1"), "claude-sonnet-4", "aliases.gpt-4.1 shadows"),
    (("aliases", "fast"), 7, "aliases.fast must be a non-empty string"),
    (("provders",), {}, "catalog.provders is not a known field"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_bad_fields_raise_value_error_naming_the_path(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        catalog_from_data(_set(path, value))
    assert message in str(info.value)


def test_duplicate_deployment_ids_are_rejected() -> None:
    data = _set(("models", "claude-sonnet-4", "deployments", 0, "id"), "openai/gpt-4.1")
    with pytest.raises(ValueError, match="'openai/gpt-4.1' is already used by model 'gpt-4.1'"):
        catalog_from_data(data)


def test_parsing_does_not_modify_input() -> None:
    data = minimal()
    before = copy.deepcopy(data)
    catalog_from_data(data)
    assert data == before


@given(st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False))
def test_decimal_strings_parse_exactly(price: Decimal) -> None:
    data = _set((*_PRICE, "input"), str(price))
    parsed = catalog_from_data(data).resolve("gpt-4.1").deployments[0].price.input
    assert parsed == price and str(parsed) == str(price)


@given(st.integers(min_value=0, max_value=10**9))
def test_integer_prices_are_accepted(price: int) -> None:
    data = _set((*_PRICE, "output"), price)
    assert catalog_from_data(data).resolve("gpt-4.1").deployments[0].price.output == price


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_prices_are_always_rejected(price: float) -> None:
    with pytest.raises(ValueError, match="must be a decimal string"):
        catalog_from_data(_set((*_PRICE, "input"), price))


# ---- overrides ----------------------------------------------------------------------------


def test_merge_overrides_fields_and_price_keys_by_deployment_id() -> None:
    base = minimal()
    override = {
        "models": {
            "gpt-4.1": {
                "created": 1,
                "deployments": [
                    {"provider": "openai", "upstream_model": "gpt-4.1",
                     "price": {"input": "1.50"}, "weight": 5}
                ],
            }
        }
    }
    catalog = catalog_from_data(merge_catalog_data(base, override))
    entry = catalog.resolve("gpt-4.1")
    (dep,) = entry.deployments
    assert entry.created == 1 and entry.owned_by == "openai"
    assert dep.price.input == Decimal("1.50") and dep.price.output == Decimal("8.00")
    assert dep.weight == 5 and dep.context_window == 1047576
    assert base == minimal()  # the base was not modified


def test_merge_adds_models_deployments_and_aliases() -> None:
    override = {
        "models": {
            "gpt-4.1": {
                "deployments": [
                    {"provider": "azure", "upstream_model": "gpt-4.1", "context_window": 128000,
                     "max_output_tokens": 16384, "price": {"input": "2.2", "output": "8.8"}}
                ]
            },
            "llama-3.1-8b": {
                "owned_by": "meta", "created": 0, "fallbacks": ["smart"],
                "deployments": [
                    {"provider": "groq", "upstream_model": "llama-3.1-8b-instant",
                     "context_window": 131072, "max_output_tokens": 8192,
                     "price": {"input": "0.05", "output": "0.08"}}
                ],
            },
        },
        "aliases": {"local": "llama-3.1-8b", "smart": "claude-sonnet-4"},
    }
    catalog = catalog_from_data(merge_catalog_data(minimal(), override))
    assert [d.id for d in catalog.resolve("gpt-4.1").deployments] == [
        "openai/gpt-4.1", "azure/gpt-4.1"]
    assert catalog.resolve("local").id == "llama-3.1-8b"
    assert catalog.resolve("smart").id == "claude-sonnet-4"
    assert [d.provider for d in catalog.candidates("local")] == ["groq", "anthropic"]


def test_merge_removes_models_and_deployments_with_their_references() -> None:
    base = minimal()
    base["aliases"]["sonnet"] = "claude-sonnet-4"
    base["models"]["gpt-4.1"]["fallbacks"] = ["sonnet"]
    base["models"]["gpt-4.1"]["deployments"].append(
        {"provider": "azure", "upstream_model": "gpt-4.1", "context_window": 10,
         "max_output_tokens": 5, "price": {"input": "1", "output": "1"}})
    override = {
        "models": {
            "claude-sonnet-4": {"remove": True},
            "gpt-4.1": {"deployments": [{"id": "openai/gpt-4.1", "remove": True}]},
        }
    }
    catalog = catalog_from_data(merge_catalog_data(base, override))
    assert set(catalog.models) == {"gpt-4.1"}
    assert dict(catalog.aliases) == {"smart": "gpt-4.1"}
    assert catalog.resolve("gpt-4.1").fallbacks == ()
    assert [d.id for d in catalog.resolve("gpt-4.1").deployments] == ["azure/gpt-4.1"]


def test_merge_leaves_bad_overrides_to_validation() -> None:
    merged = merge_catalog_data(minimal(), {"models": {"gpt-4.1": {"owned_by": 7}}})
    with pytest.raises(ValueError, match="models.gpt-4.1.owned_by must be a non-empty string"):
        catalog_from_data(merged)
    with pytest.raises(ValueError, match="models.x must be a table"):
        merge_catalog_data(minimal(), {"models": {"x": "y"}})
    with pytest.raises(ValueError, match="models.gpt-4.1.deployments must be a list"):
        merge_catalog_data(minimal(), {"models": {"gpt-4.1": {"deployments": {"a": 1}}}})


def test_merge_with_empty_override_is_identity_on_the_default() -> None:
    base = load_default()
    assert catalog_from_data(merge_catalog_data(base, {})) == catalog_from_data(base)


# ---- restrict_to_providers -------------------------------------------------------------


def test_restrict_drops_unserved_deployments_models_fallbacks_and_aliases() -> None:
    catalog = catalog_from_data(minimal())
    only_openai = restrict_to_providers(catalog, frozenset({"openai"}))
    assert set(only_openai.models) == {"gpt-4.1"}
    assert only_openai.models["gpt-4.1"].fallbacks == ()
    assert [d.provider for d in only_openai.candidates("smart")] == ["openai"]
    only_anthropic = restrict_to_providers(catalog, frozenset({"anthropic"}))
    assert set(only_anthropic.models) == {"claude-sonnet-4"}
    assert only_anthropic.aliases == {}
    with pytest.raises(UnknownModel):
        only_anthropic.resolve("gpt-4.1")


@given(st.sets(st.sampled_from(["openai", "anthropic", "mock", "groq"])))
def test_restrict_never_keeps_an_unserved_provider(labels: set[str]) -> None:
    catalog = catalog_from_data(load_default())
    restricted = restrict_to_providers(catalog, frozenset(labels))
    for name in [*restricted.models, *restricted.aliases]:
        assert {d.provider for d in restricted.candidates(name)} <= labels
    both = restrict_to_providers(catalog, frozenset(labels | {"openai", "anthropic", "mock"}))
    assert both == catalog


def test_restrict_remembers_why_a_dropped_model_or_alias_cannot_be_answered() -> None:
    catalog = catalog_from_data(minimal())
    hint = {"anthropic": "Set THE_KEY."}
    only_openai = restrict_to_providers(catalog, frozenset({"openai", "mock"}), hint)
    with pytest.raises(UnknownModel) as caught:
        only_openai.resolve("claude-sonnet-4")
    assert caught.value.message == (
        "The model 'claude-sonnet-4' is served by anthropic, which this gateway has not "
        "configured (configured providers: openai). Set THE_KEY."
    )
    assert caught.value.param == "model"
    with pytest.raises(UnknownModel, match="The model 'nope' does not exist"):
        only_openai.resolve("nope")
    nothing = restrict_to_providers(catalog, frozenset())
    assert "(configured providers: none)." in nothing.unserved["gpt-4.1"]
