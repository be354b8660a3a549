"""core.routing: filters, errors, strategies, group order, and routing properties."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.billing import worst_case_cost
from core.catalog import Catalog, Deployment, ModelEntry, Price
from core.errors import BudgetExceeded, NoRouteAvailable, UnknownModel
from core.health import DeploymentHealth, HealthPolicy, Outcome, begin_probe, observe
from core.model import (
    STRATEGIES,
    FailureKind,
    GatewayRequest,
    ImagePart,
    JSONValue,
    Message,
    RoutingConstraints,
    Strategy,
    TextPart,
    Tool,
)
from core.routing import RoutePlan, _filter, _stages, plan, required_capabilities

POLICY = HealthPolicy()


def dep(
    id: str,
    provider: str,
    input: str = "1",
    output: str = "2",
    *,
    model: str = "m",
    window: int = 100_000,
    max_out: int = 4096,
    caps: frozenset[str] = frozenset({"tools", "vision", "json"}),
    weight: int = 1,
) -> Deployment:
    return Deployment(
        id=id, model=model, provider=provider, upstream_model=id.split("/")[-1],
        price=Price(input=Decimal(input), output=Decimal(output)),
        context_window=window, max_output_tokens=max_out, capabilities=caps, weight=weight,
    )


def catalog(own: list[Deployment], fallback: list[Deployment] | None = None) -> Catalog:
    models = {"m": ModelEntry("m", "x", 0, tuple(own), ("f",) if fallback else ())}
    if fallback:
        models["f"] = ModelEntry("f", "x", 0, tuple(fallback))
    return Catalog(models=models, aliases={"alias": "m"})


def request(
    *,
    model: str = "m",
    strategy: Strategy = "cost",
    allow: frozenset[str] | None = None,
    deny: frozenset[str] = frozenset(),
    max_cost: Decimal | None = None,
    max_out: int | None = None,
    tools: tuple[Tool, ...] = (),
    messages: tuple[Message, ...] = (Message("user", (TextPart("hi"),)),),
    response_format: JSONValue = None,
) -> GatewayRequest:
    return GatewayRequest(
        model=model,
        messages=messages,
        routing=RoutingConstraints(strategy=strategy, allow_providers=allow, deny_providers=deny),
        max_cost_usd=max_cost,
        max_output_tokens=max_out,
        tools=tools,
        response_format=response_format,
    )


def ids(p: RoutePlan) -> list[str]:
    return [d.id for d in p.deployments]


def route(
    req: GatewayRequest,
    cat: Catalog,
    health: dict[str, DeploymentHealth] | None = None,
    *,
    now: float = 1000.0,
    draw: float = 0.0,
    input_tokens: int = 1000,
) -> RoutePlan:
    return plan(req, cat, health or {}, now=now, draw=draw, input_tokens=input_tokens)


def open_health(at: float = 1000.0) -> DeploymentHealth:
    state: DeploymentHealth | None = None
    for _ in range(POLICY.failure_threshold):
        state = observe(state, Outcome(False, 1.0, FailureKind.SERVER_ERROR), at, POLICY)
    assert state is not None and state.circuit == "open"
    return state


def measured(latency: float, failures: int = 0, successes: int = 1) -> DeploymentHealth:
    state: DeploymentHealth | None = None
    for _ in range(successes):
        state = observe(state, Outcome(True, latency), 0.0, POLICY)
    for _ in range(failures):
        state = observe(state, Outcome(False, None, FailureKind.TIMEOUT), 0.0, POLICY)
    assert state is not None
    return state


CHEAP = dep("a/cheap", "a", "1", "2")
MID = dep("b/mid", "b", "2", "4")
DEAR = dep("c/dear", "c", "10", "30")
CAT = catalog([DEAR, CHEAP, MID])


# ---- filters and errors -------------------------------------------------------------------


def test_unknown_model_raises() -> None:
    with pytest.raises(UnknownModel):
        route(request(model="nope"), CAT)


def test_alias_resolves() -> None:
    assert ids(route(request(model="alias"), CAT)) == ["a/cheap", "b/mid", "c/dear"]


def test_allow_and_deny_filters_with_explanations() -> None:
    p = route(request(allow=frozenset({"a", "c"}), deny=frozenset({"c"})), CAT)
    assert ids(p) == ["a/cheap"]
    assert dict(p.dropped) == {
        "b/mid": "provider not in allow_providers",
        "c/dear": "provider in deny_providers",
    }


@pytest.mark.parametrize(
    ("allow", "deny", "param"),
    [
        (frozenset({"z"}), frozenset(), "constraints.routing.allow_providers"),
        (frozenset(), frozenset(), "constraints.routing.allow_providers"),
        (None, frozenset({"a", "b", "c"}), "constraints.routing.deny_providers"),
        (frozenset({"a"}), frozenset({"a"}), "constraints.routing.deny_providers"),
    ],
)
def test_provider_filters_that_empty_the_plan_name_their_param(
    allow: frozenset[str] | None, deny: frozenset[str], param: str
) -> None:
    with pytest.raises(NoRouteAvailable) as info:
        route(request(allow=allow, deny=deny), CAT)
    assert info.value.param == param


def test_capabilities_are_required() -> None:
    plain = dep("d/plain", "d", "0", "0", caps=frozenset())
    tools_only = dep("e/tools", "e", "5", "5", caps=frozenset({"tools"}))
    cat = catalog([plain, tools_only, CHEAP])
    image = Message("user", (TextPart("look"), ImagePart("https://x/y.png")))
    cases: list[tuple[GatewayRequest, list[str]]] = [
        (request(), ["d/plain", "a/cheap", "e/tools"]),
        (request(tools=(Tool("f"),)), ["a/cheap", "e/tools"]),
        (request(messages=(image,)), ["a/cheap"]),
        (request(response_format={"type": "json_object"}), ["a/cheap"]),
        (request(response_format={"type": "json_schema", "json_schema": {}}), ["a/cheap"]),
        (request(response_format={"type": "text"}), ["d/plain", "a/cheap", "e/tools"]),
    ]
    for req, expected in cases:
        p = route(req, cat)
        assert ids(p) == expected, req
        assert all(reason.startswith("missing capability") for _, reason in p.dropped)


def test_required_capabilities() -> None:
    image = Message("user", (ImagePart("data:image/png;base64,AA=="),))
    req = request(tools=(Tool("f"),), messages=(image,), response_format={"type": "json_object"})
    assert required_capabilities(req) == {"tools", "vision", "json"}
    assert required_capabilities(request()) == frozenset()


def test_missing_capability_everywhere_is_no_route_naming_it() -> None:
    cat = catalog([dep("d/plain", "d", caps=frozenset())])
    with pytest.raises(NoRouteAvailable) as info:
        route(request(tools=(Tool("f"),)), cat)
    assert "tools" in info.value.message
    assert info.value.param is None


def test_context_window_filter() -> None:
    cat = catalog([dep("s/small", "s", "0", "0", window=500), CHEAP])
    p = route(request(), cat, input_tokens=501)
    assert ids(p) == ["a/cheap"]
    assert "context window" in dict(p.dropped)["s/small"]
    assert ids(route(request(), cat, input_tokens=500)) == ["s/small", "a/cheap"]
    with pytest.raises(NoRouteAvailable) as info:
        route(request(), cat, input_tokens=200_000)
    assert "context window" in info.value.message


def test_budget_drops_deployments_whose_minimal_answer_does_not_fit() -> None:
    # 1000 input tokens + 1 output token: cheap 0.001002, mid 0.002004, dear 0.01003
    p = route(request(max_cost=Decimal("0.002004")), CAT)
    assert ids(p) == ["a/cheap", "b/mid"]
    assert dict(p.dropped)["c/dear"].startswith("minimal cost")
    # a long answer may not fit; that is the server's cap to apply, not a drop
    assert ids(route(request(max_cost=Decimal("0.0011"), max_out=4096), CAT)) == ["a/cheap"]


def test_all_over_budget_is_budget_exceeded() -> None:
    with pytest.raises(BudgetExceeded) as info:
        route(request(max_cost=Decimal("0.001")), CAT)
    assert info.value.param == "constraints.budget.max_cost_usd"
    assert info.value.status == 402


def test_budget_after_provider_filter_is_still_budget_exceeded() -> None:
    with pytest.raises(BudgetExceeded):
        route(request(deny=frozenset({"a"}), max_cost=Decimal("0.0015")), CAT)


def test_bad_draw_and_input_tokens_are_rejected() -> None:
    with pytest.raises(ValueError):
        route(request(), CAT, draw=1.0)
    with pytest.raises(ValueError):
        route(request(), CAT, input_tokens=-1)


# ---- strategies ------------------------------------------------------------------------------


def test_cost_orders_by_expected_cost_with_ties_by_id() -> None:
    # x: input-heavy, y: output-heavy; which one is cheaper depends on the assumed output
    x = dep("x/in", "x", "10", "1")
    y = dep("y/out", "y", "1", "10")
    twin = dep("a/twin", "a", "10", "1")
    cat = catalog([y, x, twin])
    assert ids(route(request(), cat, input_tokens=1000)) == ["y/out", "a/twin", "x/in"]
    assert ids(route(request(max_out=5000), cat, input_tokens=10)) == ["a/twin", "x/in", "y/out"]


def test_cost_caps_assumed_output_at_the_deployment_limit() -> None:
    short = dep("s/short", "s", "1", "100", max_out=10)  # 1000 + 10*100 = 2000
    longer = dep("l/long", "l", "1", "5")  # 1000 + 1000*5 = 6000
    assert ids(route(request(max_out=1000), catalog([longer, short]))) == ["s/short", "l/long"]


def test_latency_orders_known_latencies_then_unknown() -> None:
    health = {"c/dear": measured(0.2), "b/mid": measured(0.9)}
    assert ids(route(request(strategy="latency"), CAT, health)) == ["c/dear", "b/mid", "a/cheap"]


def test_reliability_orders_by_smoothed_success_rate() -> None:
    health = {"a/cheap": measured(0.1, failures=3, successes=2), "c/dear": measured(0.1, successes=5)}
    # dear 6/7, mid unknown 1/2, cheap 3/7
    assert ids(route(request(strategy="reliability"), CAT, health)) == ["c/dear", "b/mid", "a/cheap"]


def test_weighted_draw_frequencies_follow_weights() -> None:
    deps = [dep("a/1", "a", weight=1), dep("b/3", "b", weight=3), dep("c/6", "c", weight=6),
            dep("d/0", "d", weight=0)]
    cat = catalog(deps)
    n = 1000
    firsts = Counter(
        ids(route(request(strategy="weighted"), cat, draw=(i + 0.5) / n))[0] for i in range(n)
    )
    assert firsts == {"a/1": 100, "b/3": 300, "c/6": 600}
    p = route(request(strategy="weighted"), cat, draw=0.05)
    assert ids(p) == ["a/1", "c/6", "b/3", "d/0"]  # the rest by weight desc, zero last


def test_weighted_with_all_zero_weights_orders_by_id() -> None:
    cat = catalog([dep("b/x", "b", weight=0), dep("a/x", "a", weight=0)])
    assert ids(route(request(strategy="weighted"), cat, draw=0.7)) == ["a/x", "b/x"]


# ---- groups: own before fallback, open circuits last --------------------------------------


def test_own_deployments_come_before_fallback_model_deployments() -> None:
    fb = dep("z/fallback-cheap", "z", "0", "0", model="f")
    cat = catalog([DEAR, MID], [fb])
    for strategy in STRATEGIES:
        assert ids(route(request(strategy=strategy), cat))[-1] == "z/fallback-cheap"


def test_open_circuits_go_last_but_stay_as_last_resort() -> None:
    fb = dep("z/fb", "z", model="f")
    cat = catalog([CHEAP, MID], [fb])
    health = {"a/cheap": open_health(at=1000.0)}
    for strategy in STRATEGIES:
        p = route(request(strategy=strategy), cat, health, now=1010.0)
        assert ids(p) == ["b/mid", "z/fb", "a/cheap"], strategy
    # after the cooldown the probe is allowed: back in its cost place
    assert ids(route(request(), cat, health, now=1030.0)) == ["a/cheap", "b/mid", "z/fb"]
    # while the one probe is in flight it is last again
    probing = {"a/cheap": begin_probe(health["a/cheap"], 1030.0, POLICY)}
    assert ids(route(request(), cat, probing, now=1031.0)) == ["b/mid", "z/fb", "a/cheap"]


# ---- properties ----------------------------------------------------------------------------

PROVIDERS = ["p0", "p1", "p2", "p3"]


@st.composite
def deployments(draw: st.DrawFn, model: str, prefix: str) -> list[Deployment]:
    n = draw(st.integers(1, 4))
    return [
        dep(
            f"{prefix}{i}/{model}", draw(st.sampled_from(PROVIDERS)),
            str(draw(st.integers(0, 50))), str(draw(st.integers(0, 50))), model=model,
            window=draw(st.integers(100, 5000)), max_out=draw(st.integers(1, 100)),
            caps=frozenset(draw(st.sets(st.sampled_from(["tools", "vision", "json"])))),
            weight=draw(st.integers(0, 5)),
        )
        for i in range(n)
    ]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[GatewayRequest, Catalog, dict[str, DeploymentHealth], int, float]:
    own = draw(deployments("m", "o"))
    fallback = draw(st.none() | deployments("f", "f"))
    cat = catalog(own, fallback)
    req = request(
        strategy=draw(st.sampled_from(STRATEGIES)),
        allow=draw(st.none() | st.frozensets(st.sampled_from(PROVIDERS))),
        deny=draw(st.frozensets(st.sampled_from(PROVIDERS), max_size=2)),
        max_cost=draw(st.none() | st.decimals("0", "0.2", places=6)),
        max_out=draw(st.none() | st.integers(1, 200)),
        tools=(Tool("t"),) if draw(st.booleans()) else (),
    )
    health: dict[str, DeploymentHealth] = {}
    for d in own + (fallback or []):
        if draw(st.booleans()):
            state: DeploymentHealth | None = None
            for ok in draw(st.lists(st.booleans(), max_size=8)):
                state = observe(state, Outcome(ok, draw(st.floats(0, 5)), FailureKind.TIMEOUT),
                                draw(st.floats(0, 100)), POLICY)
            if state is not None:
                health[d.id] = state
    return req, cat, health, draw(st.integers(0, 3000)), draw(st.floats(0, 1, exclude_max=True))


@given(scenarios(), st.floats(0, 200))
def test_plans_respect_every_constraint_and_are_deterministic(
    scenario: tuple[GatewayRequest, Catalog, dict[str, DeploymentHealth], int, float], now: float
) -> None:
    req, cat, health, tokens, draw = scenario
    try:
        p = plan(req, cat, health, now=now, draw=draw, input_tokens=tokens)
    except (NoRouteAvailable, BudgetExceeded):
        return
    again = plan(req, cat, health, now=now, draw=draw, input_tokens=tokens)
    assert again == p
    assert p.deployments, "a plan is never empty"
    assert p.strategy == req.routing.strategy
    r = req.routing
    for d in p.deployments:
        assert d.provider not in r.deny_providers
        assert r.allow_providers is None or d.provider in r.allow_providers
        assert tokens <= d.context_window
        if req.tools:
            assert "tools" in d.capabilities
        if req.max_cost_usd is not None:
            assert worst_case_cost(tokens, 1, d.price) <= req.max_cost_usd
    candidates = cat.candidates(req.model)
    planned = [d.id for d in p.deployments]
    dropped = [i for i, _ in p.dropped]
    assert len(set(planned)) == len(planned)
    assert sorted(planned + dropped) == sorted(d.id for d in candidates)


@given(scenarios())
def test_no_route_errors_only_when_every_candidate_fails_a_filter(
    scenario: tuple[GatewayRequest, Catalog, dict[str, DeploymentHealth], int, float],
) -> None:
    req, cat, health, tokens, draw = scenario
    r = req.routing

    def fits(d: Deployment) -> bool:
        return (
            (r.allow_providers is None or d.provider in r.allow_providers)
            and d.provider not in r.deny_providers
            and (not req.tools or "tools" in d.capabilities)
            and tokens <= d.context_window
            and (req.max_cost_usd is None or worst_case_cost(tokens, 1, d.price) <= req.max_cost_usd)
        )

    expected = [d.id for d in cat.candidates(req.model) if fits(d)]
    try:
        p = plan(req, cat, health, now=50.0, draw=draw, input_tokens=tokens)
    except (NoRouteAvailable, BudgetExceeded):
        assert expected == []
        return
    assert sorted(d.id for d in p.deployments) == sorted(expected)


@given(scenarios())
def test_leaving_out_the_stages_with_nothing_to_check_changes_nothing(
    scenario: tuple[GatewayRequest, Catalog, dict[str, DeploymentHealth], int, float],
) -> None:
    # plan() runs only the stages that can drop a deployment; every stage, in order, must
    # keep the same deployments, explain the same drops and raise the same error
    req, cat, _, tokens, _ = scenario
    candidates = cat.candidates(req.model)

    def outcome(every: bool) -> object:
        try:
            return _filter(candidates, _stages(req, tokens, every=every))
        except (NoRouteAvailable, BudgetExceeded) as err:
            return type(err), str(err), err.param

    assert outcome(every=False) == outcome(every=True)
    stages = [s.name for s in _stages(req, tokens, every=False)]
    assert "context" in stages
    assert ("allow" in stages) == (req.routing.allow_providers is not None)
    assert ("budget" in stages) == (req.max_cost_usd is not None)


def test_a_plain_request_runs_the_context_stage_alone() -> None:
    assert [s.name for s in _stages(request(), 10, every=False)] == ["context"]
    assert [s.name for s in _stages(request(), 10, every=True)] == [
        "allow", "deny", "capabilities", "context", "budget"]


def test_a_model_with_no_deployment_still_fails_in_the_first_stage() -> None:
    empty = Catalog(models={"m": ModelEntry("m", "x", 0, ())})
    with pytest.raises(NoRouteAvailable) as info:
        plan(request(), empty, {}, now=0.0, draw=0.5, input_tokens=10)
    assert info.value.param == "constraints.routing.allow_providers"
