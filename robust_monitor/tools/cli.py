"""The ``robust-monitor`` command: every tool on the same core.

Each subcommand lives in its own module and registers itself here with ``add_parser`` and a
``run(args) -> int`` function. Errors the project raises on purpose (``RobustMonitorError``)
become one line on stderr and exit status 2; nothing else is swallowed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from robust_monitor import __version__
from robust_monitor.core.errors import RobustMonitorError

Runner = Callable[[argparse.Namespace], int]


def _subcommands() -> list[tuple[str, Callable[[argparse._SubParsersAction], None]]]:  # type: ignore[type-arg]
    # Imported lazily so `robust-monitor --help` stays fast and a broken optional tool cannot
    # take the others down.
    from robust_monitor.tools import (
        bench,
        calibrate_cmd,
        certify_cmd,
        demo,
        eval_ood,
        fleet,
        model_card,
        play_cmd,
        replay,
        ros_cmd,
        sim,
    )

    return [
        ("demo", demo.add_parser),
        ("certify", certify_cmd.add_parser),
        ("bench", bench.add_parser),
        ("node, launch", ros_cmd.add_parsers),
        ("calibrate", calibrate_cmd.add_parser),
        ("eval-ood", eval_ood.add_parser),
        ("model-card", model_card.add_parser),
        ("replay", replay.add_parser),
        ("fleet-replay", fleet.add_parser),
        ("play", play_cmd.add_parser),
        ("sim", sim.add_parser),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robust-monitor",
        description="Runtime safety monitor: certify frames, detect OOD input, arbitrate speed.",
    )
    parser.add_argument("--version", action="version", version=f"robust-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _name, add in _subcommands():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runner: Runner = args.run
    try:
        return runner(args)
    except RobustMonitorError as exc:
        print(f"robust-monitor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robust-monitor {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
