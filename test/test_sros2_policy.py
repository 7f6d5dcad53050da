"""The example SROS 2 policy (config/sros2/robust_monitor.policy.xml) against the real nodes.

SROS 2 grants are deny-by-default: a topic or service a node uses without a grant fails at run
time under ``ROS_SECURITY_STRATEGY=Enforce``. So the real monitor and arbiter nodes are created
here (namespace /, the policy's), their publishers, subscriptions and services are read from the
ROS graph, and every one must be granted to the node's enclave. The operator services must be
served by the arbiter alone and requested by the operator enclave alone, and nobody may set the
nodes' parameters over the graph.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest
from rclpy.node import Node
from rosutil import ros_harness

from robust_monitor.ros.arbiter_node import ArbiterNode
from robust_monitor.ros.monitor_node import MonitorNode

POLICY = Path(__file__).resolve().parents[1] / "config" / "sros2" / "robust_monitor.policy.xml"
OPERATOR_SERVICES = {
    "/robust_monitor_arbiter/operator_release",
    "/robust_monitor_arbiter/operator_takeover",
}
# Parameter services rclpy gives every node; the policy may deny them, but must say so.
PARAMETER_SETTERS = {"set_parameters", "set_parameters_atomically"}

Grants = dict[tuple[str, str], set[str]]  # (kind, permission) -> fully qualified names


def _expand(name: str, node: str) -> str:
    if name.startswith("~/"):
        return f"/{node}/{name[2:]}"
    return name if name.startswith("/") else f"/{name}"


def load_policy() -> dict[str, dict[str, dict[tuple[str, str, str], set[str]]]]:
    """enclave -> node -> (kind, permission, ALLOW|DENY) -> names."""
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    out: dict[str, dict[str, dict[tuple[str, str, str], set[str]]]] = {}
    for enclave in root.iter("enclave"):
        nodes: dict[str, dict[tuple[str, str, str], set[str]]] = {}
        for profile in enclave.iter("profile"):
            assert profile.get("ns") == "/"
            node = str(profile.get("node"))
            rules: dict[tuple[str, str, str], set[str]] = defaultdict(set)
            for group in profile:
                kind = {"topics": "topic", "services": "service"}[group.tag]
                for permission, value in group.attrib.items():
                    assert value in ("ALLOW", "DENY"), (node, group.tag, permission, value)
                    names = {_expand(str(e.text).strip(), node) for e in group.iter(kind)}
                    rules[(kind, permission, value)] |= names
            nodes[node] = rules
        out[str(enclave.get("path"))] = nodes
    return out


def _graph(probe: Node, name: str) -> dict[str, set[str]]:
    """What node ``name`` (namespace /) publishes, subscribes and serves, from the ROS graph."""

    def names(pairs: list[tuple[str, list[str]]]) -> set[str]:
        return {n for n, _ in pairs}

    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            seen = {
                "publish": names(probe.get_publisher_names_and_types_by_node(name, "/")),
                "subscribe": names(probe.get_subscriber_names_and_types_by_node(name, "/")),
                "reply": names(probe.get_service_names_and_types_by_node(name, "/")),
                "request": names(probe.get_client_names_and_types_by_node(name, "/")),
            }
        except Exception:  # NodeNameNonExistentError until discovery has it
            seen = {}
        if seen.get("reply") and seen.get("publish"):
            break
        time.sleep(0.1)
    assert seen, f"node /{name} never showed up in the graph"
    return seen


@pytest.fixture(scope="module")
def live_graph() -> dict[str, dict[str, set[str]]]:
    with ros_harness() as ros:
        ros.add(MonitorNode(context=ros.context))
        ros.add(ArbiterNode(context=ros.context))
        probe = ros.node("sros2_policy_probe", "/sros2_probe")
        return {n: _graph(probe, n) for n in ("robust_monitor", "robust_monitor_arbiter")}


@pytest.mark.parametrize(
    ("enclave", "node"),
    [
        ("/robust_monitor/monitor", "robust_monitor"),
        ("/robust_monitor/arbiter", "robust_monitor_arbiter"),
    ],
)
def test_every_topic_and_service_the_node_uses_is_granted(
    live_graph: dict[str, dict[str, set[str]]], enclave: str, node: str
) -> None:
    rules = load_policy()[enclave][node]
    used = live_graph[node]
    for permission, kind in (
        ("publish", "topic"), ("subscribe", "topic"), ("reply", "service"), ("request", "service"),
    ):  # fmt: skip
        allowed = rules.get((kind, permission, "ALLOW"), set())
        denied = rules.get((kind, permission, "DENY"), set())
        missing = used[permission] - allowed
        if permission == "reply":
            # Parameter setters exist on every rclpy node; the policy denies them on purpose.
            missing -= {f"/{node}/{s}" for s in PARAMETER_SETTERS} & denied
        assert not missing, f"{enclave}: {node} {permission}es {sorted(missing)} without a grant"
    # The grants are not a blanket: no wildcards, nothing the node does not do (but /clock,
    # which only a node with use_sim_time subscribes).
    for (kind, permission, value), names in rules.items():
        assert not any("*" in n for n in names), (enclave, kind, permission)
        if value == "ALLOW":
            extra = names - used[permission] - {"/clock"}
            assert not extra, f"{enclave}: grants {permission} {sorted(extra)} it never uses"


def test_the_safety_parameters_cannot_be_set_over_the_graph() -> None:
    policy = load_policy()
    for enclave, node in (
        ("/robust_monitor/monitor", "robust_monitor"),
        ("/robust_monitor/arbiter", "robust_monitor_arbiter"),
    ):
        rules = policy[enclave][node]
        setters = {f"/{node}/{s}" for s in PARAMETER_SETTERS}
        assert setters <= rules[("service", "reply", "DENY")]
        assert not setters & rules.get(("service", "reply", "ALLOW"), set())


def test_only_the_operator_enclave_may_release_and_only_the_arbiter_serves() -> None:
    policy = load_policy()
    requesters = {
        enclave
        for enclave, nodes in policy.items()
        for rules in nodes.values()
        if OPERATOR_SERVICES & rules.get(("service", "request", "ALLOW"), set())
    }
    servers = {
        enclave
        for enclave, nodes in policy.items()
        for rules in nodes.values()
        if OPERATOR_SERVICES & rules.get(("service", "reply", "ALLOW"), set())
    }
    assert requesters == {"/robust_monitor/operator"}
    assert servers == {"/robust_monitor/arbiter"}
    operator = policy["/robust_monitor/operator"]["operator_console"]
    assert operator[("service", "request", "ALLOW")] == OPERATOR_SERVICES
    # The operator console watches; it cannot publish evidence or commands.
    assert operator[("topic", "publish", "ALLOW")] <= {"/rosout", "/parameter_events"}


def test_only_the_monitor_may_publish_certificates() -> None:
    publishers = {
        enclave
        for enclave, nodes in load_policy().items()
        for rules in nodes.values()
        if "/robust_monitor/certificate" in rules.get(("topic", "publish", "ALLOW"), set())
    }
    assert publishers == {"/robust_monitor/monitor"}
