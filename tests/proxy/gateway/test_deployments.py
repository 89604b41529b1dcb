"""The router of model aliases to deployments: weighted picks, exact in every window; stickiness."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from proxy.config.settings import DeploymentConfig, ModelConfig
from proxy.gateway.deployments import Deployment, RoutePolicy, Router, build_router
from proxy.gateway.errors import ProxyError


def deployment(name: str, weight: float) -> Deployment:
    return Deployment(
        alias="m",
        name=name,
        backend="vllm",
        model=name,
        api_base="http://x",
        timeout_s=1,
        weight=weight,
        on_prem=True,
        simulated=False,
    )


def test_weights_hold_within_half_a_point_over_10000_requests():
    router = Router({"m": [deployment("hosted", 95), deployment("pilot", 5)]})
    picks = Counter(router.candidates("m")[0].name for _ in range(10_000))
    assert abs(picks["pilot"] / 10_000 - 0.05) <= 0.005


def test_weights_hold_over_every_window_not_just_on_average():
    router = Router({"m": [deployment("a", 3), deployment("b", 1)]})
    picks = [router.candidates("m")[0].name for _ in range(400)]
    for start in range(0, 400, 4):
        assert picks[start : start + 4].count("b") == 1


def test_sticky_sessions_stay_on_one_deployment_and_follow_weights():
    router = Router(
        {"m": [deployment("a", 80), deployment("b", 20)]}, {"m": RoutePolicy(sticky_sessions=True)}
    )
    homes = {}
    for session, _ in itertools.product(range(2000), range(3)):
        name = router.candidates("m", session=f"s{session}")[0].name
        assert homes.setdefault(session, name) == name
    share_b = sum(1 for n in homes.values() if n == "b") / len(homes)
    assert 0.16 < share_b < 0.24


def test_build_router_points_simulated_deployments_at_their_bases():
    models = [
        ModelConfig(
            name="m",
            deployments=[
                DeploymentConfig(backend="vllm", model="a", api_base="http://gpu:8000/v1"),
                DeploymentConfig(backend="tgi", model="b", simulated=True),
            ],
        )
    ]
    router = build_router(models, {("m", 1): "http://127.0.0.1:9/v1"})
    bases = {d.model: d.api_base for d in router.deployments("m")}
    assert bases == {"a": "http://gpu:8000/v1", "b": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(("alias", "status"), [("nope", 404), ("", 400), (None, 400), (7, 400)])
def test_unknown_or_missing_alias_is_refused(alias, status):
    router = Router({"m": [deployment("a", 1)]})
    with pytest.raises(ProxyError) as err:
        router.candidates(alias)
    assert err.value.status == status
