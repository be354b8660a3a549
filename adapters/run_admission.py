"""A run's admission: whether a request may go to a provider, decided before any byte is sent.

Owns: `open_run`: authenticate the caller (an unauthenticated one gets no row: there is
no key to bill), parse the body, then admit it: the token estimate, the rate take, the
routing plan (`core.routing`, with the routing draw), each planned provider's own check
(`ChecksRequests`), the attempt machine's start and the first attempt's grant (so a
budget refusal is a plain 402 on every surface). Any refusal after authentication is
recorded (adapters/run_end.py) and then raised.
"""

from __future__ import annotations

import secrets

from adapters import watching
from adapters.execution import Execution
from adapters.run_end import end, stopped
from adapters.run_grants import refused_by_storage, take_grant
from adapters.run_state import RunState
from core import attempts, metering, routing
from core.errors import AuthenticationFailed, GatewayError
from core.model import GatewayRequest
from core.outcome import Failed
from core.tokens import estimate_request_tokens


async def open_run(state: RunState) -> Execution:
    """Authenticate, parse and admit the run's request; its record (see the docstring)."""
    d, ingress = state.driver, state.ingress
    try:
        key = ingress.key or await d.authenticate(ingress.token)
    except AuthenticationFailed as err:
        if d.observer is not None:
            d.observer.refused(watching.refused(ingress, err, d.clock.now()))
        raise
    started = d.clock.now()
    try:
        request = await ingress.parse()
    except GatewayError as err:
        state.exe_or_none = Execution(
            state.request_id, key, GatewayRequest(model="", messages=()), ingress.endpoint, started
        )
        _watch_opened(state, state.exe_or_none)
        await end(state, Failed(err))
        raise
    state.exe_or_none = exe = Execution(state.request_id, key, request, ingress.endpoint, started)
    _watch_opened(state, exe)
    if ingress.tracked:
        d.runs.add(state)
    try:
        await _admit(state, exe)
    except GatewayError as err:
        await end(state, Failed(err))
        raise
    except d.storage.errors as err:  # the database refused a rate take or grant (SQLite)
        refused = refused_by_storage(state, err)
        await end(state, Failed(refused))
        raise refused from err
    except BaseException:
        await end(state, stopped(state, outside=True))
        raise
    return exe


def _watch_opened(state: RunState, exe: Execution) -> None:
    if state.driver.observer is not None:
        state.watch = state.driver.observer.run_opened(watching.opened(state.ingress, exe))


async def _admit(state: RunState, exe: Execution) -> None:
    d, request = state.driver, exe.request
    exe.input_estimate = estimate_request_tokens(request)
    charged = metering.charged_tokens(exe.input_estimate, request.max_output_tokens)
    exe.rate_headers = await d.limits.take_rate(exe.key, charged)
    exe.plan = routing.plan(
        request,
        d.catalog,
        d.health.snapshot(),
        now=d.clock.now(),
        # 30 random bits, one read of the OS's source (`randbelow(1 << 30)` rejects
        # half its 31-bit draws: two reads, two system calls, on average)
        draw=secrets.randbits(30) / (1 << 30),
        input_tokens=exe.input_estimate,
        policy=d.health.policy,
    )
    for label in dict.fromkeys(dep.provider for dep in exe.plan.deployments):
        checker = d.checker(label)
        if checker is not None:
            checker.check_request(request)
    exe.attempts, state.actions = attempts.start(exe.plan.deployments, d.policy, d.clock.now())
    first = state.actions[0]
    if isinstance(first, attempts.Fail):
        raise first.error
    if isinstance(first, attempts.CallProvider):
        await take_grant(state, first)  # before the first byte: a refusal is a 402
