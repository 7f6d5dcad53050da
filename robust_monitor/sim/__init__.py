"""In-process closed-loop simulation: scenario files, a simulated camera, vehicle and operator.

- ``scenario.py``: the scenario file format (``robust_monitor.scenario/1``) and its validation.
- ``camera.py``: RoadScene frames at the vehicle's odometer with the scheduled effects.
- ``vehicle.py``: the kinematic vehicle (bounded acceleration and deceleration).
- ``engine.py``: the loop: camera -> FramePipeline -> Arbiter -> vehicle, operator requests.
- ``checks.py``: the scenario's expectations judged against a run.

No ROS here; ``robust-monitor sim`` (``robust_monitor/tools/sim.py``) is the command line.
"""

from robust_monitor.sim.checks import ExpectationResult, evaluate
from robust_monitor.sim.engine import SimFrame, SimRun, SimSample, simulate
from robust_monitor.sim.scenario import (
    SCENARIO_FORMAT,
    Effect,
    Expectation,
    Scenario,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "SCENARIO_FORMAT",
    "Effect",
    "Expectation",
    "ExpectationResult",
    "Scenario",
    "SimFrame",
    "SimRun",
    "SimSample",
    "evaluate",
    "load_scenario",
    "parse_scenario",
    "simulate",
]
