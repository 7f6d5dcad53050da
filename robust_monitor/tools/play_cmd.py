"""``robust-monitor play BAG``: publish a rosbag2 recording live over rclpy, with ``/clock``.

    robust-monitor play BAG [--rate R] [--topics T ...] [--clock-hz HZ] [--no-clock] [--delay S]
                        [--wait-for-subscribers S]

For a pip install without the ``ros2`` command (no ``ros2 bag play``): the nodes can be tested
live on a recording (start them with ``use_sim_time:=true``). Every topic whose message package
is importable is published with its original timing (log times, scaled by ``--rate``) as the raw
CDR bytes of the recording (rclpy's ``publish`` of serialized data: nothing is deserialized).

``/clock`` (``rosgraph_msgs/msg/Clock``): the player publishes the recording's time at
``--clock-hz`` (wall-clock rate, as ``ros2 bag play --clock``), starting at the first message's
log time; a ``/clock`` topic recorded in the bag is not replayed (one clock source only).
``--no-clock`` replays the recorded ``/clock`` instead, if there is one.

QoS: reliable, keep last 10, volatile for every topic (matches reliable and best-effort
subscribers alike); ``/clock`` reliable, keep last 1. Volatile means a subscriber that is not
matched yet misses the first messages: ``--wait-for-subscribers S`` first waits (up to S s)
until every played topic has a subscriber, then ``--delay`` waits a little longer so that the
reliable handshake completes.

ROS 1 bags are refused: their messages are not ROS 2 CDR (``robust-monitor replay`` reads them).
rclpy is needed (the ``ros`` extra); without it the command says so.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robust_monitor.core.errors import ConfigError
from robust_monitor.tools.recordings import RecordingError, open_recording

CLOCK_TOPIC = "/clock"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
NODE_NAME = "robust_monitor_player"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "play", help="publish a rosbag2 recording over ROS 2 with its timing and /clock"
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor (1 = as recorded)")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate, Hz (wall)")
    parser.add_argument(
        "--no-clock", action="store_true", help="do not generate /clock (replay a recorded one)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.5, help="seconds to wait for discovery before playing"
    )
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds until every played topic has a subscriber",
    )
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="at the end, wait up to S seconds for subscribers to acknowledge every message",
    )
    parser.set_defaults(run=run)


def message_class(msgtype: str) -> Any | None:
    """The rclpy message class of ``pkg/msg/Name``, or None when its package is not installed."""
    package, kind, name = msgtype.split("/")
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ImportError:
        return None
    return getattr(module, name, None)


@dataclass(frozen=True, slots=True)
class PlayStats:
    """What a play published."""

    messages: int
    clock_ticks: int
    wall_s: float
    skipped_topics: tuple[str, ...]


def _wait_acked(publisher: Any, timeout_s: float) -> bool:
    """Block until every reliable subscriber acknowledged what ``publisher`` sent (or timeout)."""
    from rclpy.duration import Duration

    return bool(publisher.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9))))


def _check(args: argparse.Namespace) -> None:
    if not (args.rate > 0):
        raise ConfigError(f"--rate must be > 0, got {args.rate}")
    if not (args.clock_hz > 0):
        raise ConfigError(f"--clock-hz must be > 0, got {args.clock_hz}")
    if not (args.delay >= 0):
        raise ConfigError(f"--delay must be >= 0, got {args.delay}")
    if not (args.wait_for_subscribers >= 0):
        raise ConfigError(f"--wait-for-subscribers must be >= 0, got {args.wait_for_subscribers}")
    if not (args.flush_timeout >= 0):
        raise ConfigError(f"--flush-timeout must be >= 0, got {args.flush_timeout}")
    if not (args.bag / "metadata.yaml").is_file():
        if args.bag.exists():
            raise RecordingError(
                f"{args.bag}: play needs a rosbag2 folder (with metadata.yaml); ROS 1 bags are "
                "not ROS 2 CDR"
            )
        raise RecordingError(f"recording not found: {args.bag}")


def run(args: argparse.Namespace) -> int:
    _check(args)
    try:
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    except ImportError as exc:
        raise ConfigError(f"play needs rclpy (pip install 'robust_monitor[ros]'): {exc}") from exc
    stats = play(
        args, rclpy, Node, (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
    )
    skipped = f"; skipped (message package not installed): {list(stats.skipped_topics)}"
    print(
        f"played {stats.messages} messages and {stats.clock_ticks} /clock ticks in "
        f"{stats.wall_s:.1f} s" + (skipped if stats.skipped_topics else "")
    )
    return 0


def play(args: argparse.Namespace, rclpy: Any, node_cls: Any, qos: tuple[Any, ...]) -> PlayStats:
    durability, history, profile, reliability = qos
    reader = open_recording(args.bag)
    rclpy.init(args=None)
    node = None
    try:
        wanted = set(args.topics) if args.topics else None
        connections = []
        skipped: list[str] = []
        for c in reader.connections:
            if wanted is not None and c.topic not in wanted:
                continue
            if c.topic == CLOCK_TOPIC and c.msgtype == CLOCK_TYPE and not args.no_clock:
                continue  # one clock source: ours
            if message_class(c.msgtype) is None:
                skipped.append(c.topic)
                continue
            connections.append(c)
        if wanted is not None:
            missing = sorted(wanted - {c.topic for c in reader.connections})
            if missing:
                raise RecordingError(
                    f"{args.bag}: no topic {missing}; topics: "
                    f"{sorted({c.topic for c in reader.connections})}"
                )
        node = node_cls(NODE_NAME)
        topic_qos = profile(
            history=history.KEEP_LAST,
            depth=10,
            reliability=reliability.RELIABLE,
            durability=durability.VOLATILE,
        )
        publishers: dict[str, Any] = {}
        for c in connections:
            if c.topic not in publishers:
                publishers[c.topic] = node.create_publisher(
                    message_class(c.msgtype), c.topic, topic_qos
                )
        clock_pub = None
        clock_cls = message_class(CLOCK_TYPE)
        if not args.no_clock and clock_cls is not None:
            clock_qos = profile(
                history=history.KEEP_LAST, depth=1, reliability=reliability.RELIABLE
            )
            clock_pub = node.create_publisher(clock_cls, CLOCK_TOPIC, clock_qos)
        deadline = time.monotonic() + args.wait_for_subscribers
        while time.monotonic() < deadline and not all(
            pub.get_subscription_count() > 0 for pub in publishers.values()
        ):
            time.sleep(0.05)
        time.sleep(args.delay)
        start_ns = reader.start_time
        wall0 = time.perf_counter()
        clock_period = 1.0 / args.clock_hz
        next_clock = wall0
        ticks = sent = 0

        def sim_ns(wall: float) -> int:
            return int(start_ns + (wall - wall0) * args.rate * 1e9)

        def publish_clock(now: float) -> None:
            nonlocal ticks
            assert clock_cls is not None and clock_pub is not None
            ns = sim_ns(now)
            msg = clock_cls()
            msg.clock.sec, msg.clock.nanosec = ns // 10**9, ns % 10**9
            clock_pub.publish(msg)
            ticks += 1

        def wait_until(target: float) -> None:
            nonlocal next_clock
            while True:
                now = time.perf_counter()
                if clock_pub is not None and now >= next_clock:
                    publish_clock(now)
                    next_clock += clock_period
                    continue
                if now >= target:
                    return
                wake = min(target, next_clock) if clock_pub is not None else target
                time.sleep(max(0.0, wake - now))

        for connection, log_ns, raw in reader.messages(connections=connections):
            wait_until(wall0 + (log_ns - start_ns) * 1e-9 / args.rate)
            publishers[connection.topic].publish(bytes(raw))
            sent += 1
            if sent % 50 == 0:
                print(f"\rplay: {sent} messages", end="", file=sys.stderr, flush=True)
        if sent >= 50:
            print(file=sys.stderr)
        # Reliable delivery is only done once subscribers acknowledged: tearing the node down
        # right after the last publish can drop the tail of the recording on the floor.
        flush_s = args.flush_timeout
        for pub in publishers.values():
            if not _wait_acked(pub, flush_s):
                print(
                    f"play: {pub.topic}: not all messages acknowledged within {flush_s:.1f} s",
                    file=sys.stderr,
                )
        return PlayStats(sent, ticks, time.perf_counter() - wall0, tuple(skipped))
    finally:
        reader.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
