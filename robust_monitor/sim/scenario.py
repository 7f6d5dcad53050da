"""Scenario files (``format: robust_monitor.scenario/1``): a timed drive and what must happen in it.

A scenario is one YAML mapping. Keys (units in the names; defaults in brackets)::

    format: robust_monitor.scenario/1      # required, exactly this
    name: fog_ramp                         # required: [a-z0-9_-]+
    description: "..."                     # what the scenario shows (and any known gap)
    seed: 7                                # [0] scene, effects, sensor noise and certification
    duration_s: 12.0                       # required, simulated seconds, (0, 600]
    frame_rate_hz: 10.0                    # [10] camera rate, [1, 60]
    vehicle:
      start_speed_mps: 10.0                # [policy nominal] speed at t = 0
      cruise_speed_mps: 10.0               # [policy nominal] what the planner asks for
      max_accel_mps2: 2.0                  # [2.0] bounded acceleration, > 0
      max_decel_mps2: 4.0                  # [4.0] bounded deceleration, > 0 (at least the
                                           #   arbiter's, or its controlled stop is not tracked)
    camera:
      read_noise_dn: 3.0                   # [3.0] Gaussian sensor noise, DN std, [0, 20]; with
                                           #   less, a stopped car reads as a frozen camera
    certify: {n0: 16, n: 100, alpha: 0.001}  # [these] applied over the parameter file's values
    effects:                               # [none] what happens to the camera, in time
      - name: fog                          # [type] unique; expectations refer to it
        type: fog                          # an ImageNet-C corruption, a camera fault
                                           #   (black_frame, lens_occlusion, glare) or
                                           #   frozen (the last frame repeats unchanged),
                                           #   dropout (no frames arrive), tunnel (an
                                           #   unfamiliar scene: scene.render_tunnel)
        start_s: 3.0                       # required, [0, duration_s)
        end_s: 9.0                         # required, (start_s, duration_s]
        severity: 3                        # 1..5 (corruptions and faults; required for them)
        # or a ramp: severity: {from: 1, to: 5, over_s: 4.0}: steps evenly from `from` to `to`
        #   over `over_s` seconds after start_s, then holds `to` until end_s
    operator:
      takeover_after_s: 2.0                # [null = never] reaction time: takes over (TAKEOVER)
                                           #   this long after the arbiter asks for a handover
      manual_speed_mps: 3.0                # [3.0] how fast the operator drives in MANUAL
      release_after_clean_s: 2.0           # [null = never] asks for RELEASE (every frame until
                                           #   accepted) once no effect has been active this long,
                                           #   while MANUAL or MINIMAL_RISK
    metrics:
      grace_s: 5.0                         # [5.0] after each hazard, left out of false stops
    expect: [...]                          # [none] the checks below

Expectations (``expect``), each a mapping with a ``type`` and its parameters. A *reference*
(``after``) is a number of seconds, ``<effect>`` or ``<effect>.start`` (the effect's start),
``<effect>.end``, ``takeover`` or ``release`` (the first accepted operator takeover / release;
the check fails when there was none). States are ordered NOMINAL < DEGRADED <
HANDOVER_REQUESTED < MINIMAL_RISK; MANUAL is outside the order (the operator drives).

- ``reach_state``: ``{after, within_s, state, or_worse: false}``: at some time in
  ``[after, after + within_s]`` the arbiter's state is ``state`` (with ``or_worse``: or a later
  one in the order). E.g. "within 0.6 s of fog.start the state is DEGRADED or worse", "back to
  NOMINAL within 2 s of release".
- ``never_state``: ``{state, from_s: 0, to_s: duration_s, or_worse: false}``: the state is not
  ``state`` (or worse) at any time in ``[from_s, to_s]``.
- ``min_limit``: ``{from_s: 0, to_s: duration_s, min_mps: policy nominal}``: the speed limit
  is never below ``min_mps`` in ``[from_s, to_s]`` ("no limit below nominal").
- ``stop_within``: ``{after, within_s, tolerance_mps: 0.01}``: the vehicle speed is at most the
  tolerance at some time in ``[after, after + within_s]``.
- ``max_distance_degraded``: ``{max_m}``: metres driven while the state was DEGRADED,
  HANDOVER_REQUESTED or MINIMAL_RISK (autonomy driving on poor evidence), whole run.

Times of states are a zero-order hold of the arbiter's decisions (each holds until the next).
``load_scenario`` / ``parse_scenario`` validate everything and raise ``ConfigError`` naming the
file, the key and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from robust_monitor.core.arbiter import ArbiterState
from robust_monitor.core.errors import ConfigError
from robust_monitor.synth.corruptions import CAMERA_FAULTS, CORRUPTIONS

SCENARIO_FORMAT: Final = "robust_monitor.scenario/1"
SPECIAL_EFFECTS: Final[tuple[str, ...]] = ("frozen", "dropout", "tunnel")
"""Effects without a severity: a frozen picture, no frames at all, an unfamiliar scene."""
EFFECT_TYPES: Final[tuple[str, ...]] = CORRUPTIONS + CAMERA_FAULTS + SPECIAL_EFFECTS
STATE_ORDER: Final[tuple[ArbiterState, ...]] = (
    ArbiterState.NOMINAL,
    ArbiterState.DEGRADED,
    ArbiterState.HANDOVER_REQUESTED,
    ArbiterState.MINIMAL_RISK,
)
EXPECTATION_TYPES: Final[tuple[str, ...]] = (
    "reach_state",
    "never_state",
    "min_limit",
    "stop_within",
    "max_distance_degraded",
)
_NAME = re.compile(r"^[a-z0-9_-]+$")
_TOP_KEYS = frozenset(
    {
        "format",
        "name",
        "description",
        "seed",
        "duration_s",
        "frame_rate_hz",
        "vehicle",
        "camera",
        "certify",
        "effects",
        "operator",
        "metrics",
        "expect",
    }
)


@dataclass(frozen=True, slots=True)
class Severity:
    """A constant severity (``first == last``) or a ramp over ``over_s`` seconds."""

    first: int
    last: int
    over_s: float = 0.0

    def at(self, since_start_s: float) -> int:
        """Severity ``since_start_s`` seconds after the effect began."""
        if self.first == self.last or self.over_s <= 0.0:
            return self.last
        steps = abs(self.last - self.first)
        k = min(int(max(0.0, since_start_s) / self.over_s * (steps + 1)), steps)
        return self.first + k if self.last > self.first else self.first - k


@dataclass(frozen=True, slots=True)
class Effect:
    """Something that happens to the camera over ``[start_s, end_s)``."""

    name: str
    type: str
    start_s: float
    end_s: float
    severity: Severity | None = None

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    @property
    def kind(self) -> str:
        """``corruption`` (ImageNet-C) or ``ood`` (camera faults, frozen, dropout, tunnel)."""
        return "corruption" if self.type in CORRUPTIONS else "ood"


@dataclass(frozen=True, slots=True)
class VehicleModel:
    """Kinematic vehicle: speed follows its target with bounded acceleration and deceleration."""

    start_speed_mps: float | None = None
    """None: the policy's nominal speed."""
    cruise_speed_mps: float | None = None
    """None: the policy's nominal speed."""
    max_accel_mps2: float = 2.0
    max_decel_mps2: float = 4.0


@dataclass(frozen=True, slots=True)
class OperatorModel:
    """The safety driver: reaction time to a handover request, when to hand back (None: never)."""

    takeover_after_s: float | None = None
    manual_speed_mps: float = 3.0
    release_after_clean_s: float | None = None


@dataclass(frozen=True, slots=True)
class Expectation:
    """One typed check (see the module docstring); ``params`` validated for its type."""

    type: str
    params: Mapping[str, Any]

    def describe(self) -> str:
        p = self.params
        if self.type == "reach_state":
            worse = " or worse" if p["or_worse"] else ""
            return f"within {p['within_s']:g} s of {p['after']} the state is {p['state']}{worse}"
        if self.type == "never_state":
            worse = " or worse" if p["or_worse"] else ""
            return f"never {p['state']}{worse} during [{p['from_s']:g}, {p['to_s']:g}] s"
        if self.type == "min_limit":
            floor = "nominal" if p["min_mps"] is None else f"{p['min_mps']:g} m/s"
            return f"no limit below {floor} during [{p['from_s']:g}, {p['to_s']:g}] s"
        if self.type == "stop_within":
            tol = p["tolerance_mps"]
            return f"stopped (speed <= {tol:g} m/s) within {p['within_s']:g} s of {p['after']}"
        return f"distance driven while degraded <= {p['max_m']:g} m"


@dataclass(frozen=True, slots=True)
class CertifySettings:
    """Certification budget of the simulation (small, for speed: see ``tools/sim.py``)."""

    n0: int = 16
    n: int = 100
    alpha: float = 0.001


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario file."""

    name: str
    duration_s: float
    description: str = ""
    seed: int = 0
    frame_rate_hz: float = 10.0
    vehicle: VehicleModel = field(default_factory=VehicleModel)
    read_noise_dn: float = 3.0
    certify: CertifySettings = field(default_factory=CertifySettings)
    effects: tuple[Effect, ...] = ()
    operator: OperatorModel = field(default_factory=OperatorModel)
    grace_s: float = 5.0
    expectations: tuple[Expectation, ...] = ()
    path: Path | None = None

    def effect(self, name: str) -> Effect:
        for e in self.effects:
            if e.name == name:
                return e
        raise ConfigError(f"no effect named {name!r}; effects: {[e.name for e in self.effects]}")


# --- parsing ------------------------------------------------------------------------------------
class _Reader:
    """Typed access to one mapping of the file, with errors that name the file and the key."""

    def __init__(self, where: str, data: Any, allowed: frozenset[str]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        self.where, self.data = where, data

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        low: float = -math.inf,
        high: float = math.inf,
        low_open: bool = False,
        required: bool = False,
    ) -> float | None:
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(f"{self.where}: {key} is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.where}: {key} must be a number, got {value!r}")
        v = float(value)
        bad_low = v <= low if low_open else v < low
        if not math.isfinite(v) or bad_low or v > high:
            bracket = "(" if low_open else "["
            raise ConfigError(
                f"{self.where}: {key} must be in {bracket}{low:g}, {high:g}], got {value!r}"
            )
        return v

    def req(self, key: str, **kw: Any) -> float:
        value = self.number(key, required=True, **kw)
        assert value is not None
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{self.where}: {key} must be an integer in [{low}, {high}], got {value!r}"
            )
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.where}: {key} must be a string, got {value!r}")
        return value


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ``ConfigError`` for anything wrong."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read scenario file {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"scenario file {p} is not valid YAML: {text}") from exc
    return parse_scenario(data, str(p), path=p)


def parse_scenario(data: Any, where: str = "scenario", *, path: Path | None = None) -> Scenario:
    """Validate a scenario already read from YAML (``where`` names it in error messages)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a scenario file holds a mapping, got {type(data).__name__}")
    fmt = data.get("format")
    if fmt != SCENARIO_FORMAT:
        raise ConfigError(f"{where}: format must be {SCENARIO_FORMAT!r}, got {fmt!r}")
    top = _Reader(where, data, _TOP_KEYS)
    if "name" not in data:
        raise ConfigError(f"{where}: name is required")
    name = top.text("name")
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name must match [a-z0-9_-]+, got {name!r}")
    duration = top.req("duration_s", low=0.0, high=600.0, low_open=True)
    rate = top.number("frame_rate_hz", 10.0, low=1.0, high=60.0)
    assert rate is not None
    vehicle = _vehicle(_Reader(f"{where}: vehicle", data.get("vehicle") or {}, _VEHICLE_KEYS))
    cam = _Reader(f"{where}: camera", data.get("camera") or {}, frozenset({"read_noise_dn"}))
    noise = cam.number("read_noise_dn", 3.0, low=0.0, high=20.0)
    cert = _Reader(f"{where}: certify", data.get("certify") or {}, frozenset({"n0", "n", "alpha"}))
    alpha = cert.number("alpha", 0.001, low=0.0, high=0.5, low_open=True)
    certify = CertifySettings(
        cert.integer("n0", 16, 1, 100_000), cert.integer("n", 100, 1, 1_000_000), float(alpha or 0)
    )
    effects = _effects(where, data.get("effects") or [], duration)
    operator = _operator(_Reader(f"{where}: operator", data.get("operator") or {}, _OP_KEYS))
    metrics = _Reader(f"{where}: metrics", data.get("metrics") or {}, frozenset({"grace_s"}))
    grace = metrics.number("grace_s", 5.0, low=0.0, high=600.0)
    scenario = Scenario(
        name=name,
        duration_s=duration,
        description=" ".join(top.text("description", "").split()),
        seed=top.integer("seed", 0, 0, 2**31 - 1),
        frame_rate_hz=rate,
        vehicle=vehicle,
        read_noise_dn=float(noise or 0.0),
        certify=certify,
        effects=effects,
        operator=operator,
        grace_s=float(grace or 0.0),
        path=path,
    )
    expectations = _expectations(where, data.get("expect") or [], scenario)
    return Scenario(**{**_fields(scenario), "expectations": expectations})


def _fields(s: Scenario) -> dict[str, Any]:
    return {name: getattr(s, name) for name in Scenario.__dataclass_fields__}


_VEHICLE_KEYS = frozenset(
    {"start_speed_mps", "cruise_speed_mps", "max_accel_mps2", "max_decel_mps2"}
)
_OP_KEYS = frozenset({"takeover_after_s", "manual_speed_mps", "release_after_clean_s"})


def _vehicle(r: _Reader) -> VehicleModel:
    return VehicleModel(
        start_speed_mps=r.number("start_speed_mps", low=0.0, high=60.0),
        cruise_speed_mps=r.number("cruise_speed_mps", low=0.0, high=60.0),
        max_accel_mps2=r.req("max_accel_mps2", low=0.0, high=20.0, low_open=True)
        if "max_accel_mps2" in r.data
        else 2.0,
        max_decel_mps2=r.req("max_decel_mps2", low=0.0, high=20.0, low_open=True)
        if "max_decel_mps2" in r.data
        else 4.0,
    )


def _never_or(r: _Reader, key: str) -> float | None:
    if r.data.get(key) in (None, "never"):
        return None
    return r.number(key, low=0.0, high=600.0)


def _operator(r: _Reader) -> OperatorModel:
    manual = r.number("manual_speed_mps", 3.0, low=0.0, high=60.0)
    return OperatorModel(
        takeover_after_s=_never_or(r, "takeover_after_s"),
        manual_speed_mps=float(manual or 0.0),
        release_after_clean_s=_never_or(r, "release_after_clean_s"),
    )


_EFFECT_KEYS = frozenset({"name", "type", "start_s", "end_s", "severity"})


def _effects(where: str, raw: Any, duration: float) -> tuple[Effect, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: effects must be a list, got {type(raw).__name__}")
    out: list[Effect] = []
    for i, item in enumerate(raw):
        here = f"{where}: effects[{i}]"
        r = _Reader(here, item, _EFFECT_KEYS)
        kind = r.text("type", "")
        if kind not in EFFECT_TYPES:
            raise ConfigError(f"{here}: type must be one of {list(EFFECT_TYPES)}, got {kind!r}")
        name = r.text("name", kind)
        if not _NAME.match(name) or name in ("takeover", "release"):
            raise ConfigError(
                f"{here}: name must match [a-z0-9_-]+ and not be takeover/release, got {name!r}"
            )
        if any(e.name == name for e in out):
            raise ConfigError(f"{here}: effect name {name!r} is used twice (names must be unique)")
        start = r.req("start_s", low=0.0, high=duration)
        end = r.req("end_s", low=0.0, high=duration)
        if not start < end:
            raise ConfigError(f"{here}: start_s must be < end_s, got {start:g} and {end:g}")
        severity = _severity(here, kind, item.get("severity"))
        out.append(Effect(name, kind, start, end, severity))
    return tuple(out)


def _severity(here: str, kind: str, raw: Any) -> Severity | None:
    if kind in SPECIAL_EFFECTS:
        if raw is not None:
            raise ConfigError(f"{here}: a {kind} effect takes no severity")
        return None
    if raw is None:
        raise ConfigError(f"{here}: severity is required for {kind} (1..5 or a ramp)")

    def level(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ConfigError(f"{here}: {key} must be an integer 1..5, got {value!r}")
        return value

    if isinstance(raw, Mapping):
        r = _Reader(f"{here}: severity", raw, frozenset({"from", "to", "over_s"}))
        over = r.req("over_s", low=0.0, high=600.0, low_open=True)
        return Severity(
            level(raw.get("from"), "severity.from"), level(raw.get("to"), "severity.to"), over
        )
    s = level(raw, "severity")
    return Severity(s, s)


_STATES = {s.value: s for s in ArbiterState}


def _expectations(where: str, raw: Any, scenario: Scenario) -> tuple[Expectation, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expect must be a list, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        here = f"{where}: expect[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{here} must be a mapping with a type, got {item!r}")
        kind = item.get("type")
        if kind not in EXPECTATION_TYPES:
            raise ConfigError(
                f"{here}: type must be one of {list(EXPECTATION_TYPES)}, got {kind!r}"
            )
        out.append(Expectation(str(kind), _expectation_params(here, str(kind), item, scenario)))
    return tuple(out)


def _expectation_params(
    here: str, kind: str, item: Mapping[str, Any], s: Scenario
) -> dict[str, Any]:
    keys = {
        "reach_state": {"after", "within_s", "state", "or_worse"},
        "never_state": {"state", "from_s", "to_s", "or_worse"},
        "min_limit": {"from_s", "to_s", "min_mps"},
        "stop_within": {"after", "within_s", "tolerance_mps"},
        "max_distance_degraded": {"max_m"},
    }[kind]
    r = _Reader(here, item, frozenset(keys | {"type"}))
    params: dict[str, Any] = {}
    if "after" in keys:
        params["after"] = _reference(here, item.get("after"), s)
        params["within_s"] = r.req("within_s", low=0.0, high=600.0)
    if "state" in keys:
        state = item.get("state")
        if state not in _STATES:
            raise ConfigError(f"{here}: state must be one of {sorted(_STATES)}, got {state!r}")
        worse = item.get("or_worse", False)
        if not isinstance(worse, bool):
            raise ConfigError(f"{here}: or_worse must be true or false, got {worse!r}")
        if worse and _STATES[state] is ArbiterState.MANUAL:
            raise ConfigError(f"{here}: or_worse needs an ordered state, not MANUAL")
        params["state"], params["or_worse"] = state, worse
    if "from_s" in keys:
        params["from_s"] = r.number("from_s", 0.0, low=0.0, high=s.duration_s)
        params["to_s"] = r.number("to_s", s.duration_s, low=0.0, high=s.duration_s)
        if params["from_s"] > params["to_s"]:
            raise ConfigError(f"{here}: from_s must be <= to_s")
    if kind == "min_limit":
        params["min_mps"] = r.number("min_mps", None, low=0.0, high=60.0)
    if kind == "stop_within":
        params["tolerance_mps"] = r.number("tolerance_mps", 0.01, low=0.0, high=5.0)
    if kind == "max_distance_degraded":
        params["max_m"] = r.req("max_m", low=0.0, high=1e6)
    return params


def _reference(here: str, raw: Any, s: Scenario) -> str | float:
    allowed = (
        "a time in seconds, <effect>, <effect>.start, <effect>.end, takeover or release; "
        f"effects: {[e.name for e in s.effects]}"
    )
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if not 0.0 <= float(raw) <= s.duration_s:
            raise ConfigError(f"{here}: after must be within [0, {s.duration_s:g}] s, got {raw!r}")
        return float(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{here}: after must be {allowed}; got {raw!r}")
    if raw in ("takeover", "release"):
        return raw
    name, _, edge = raw.partition(".")
    if edge not in ("", "start", "end") or name not in {e.name for e in s.effects}:
        raise ConfigError(f"{here}: after must be {allowed}; got {raw!r}")
    return raw


def reference_time(
    ref: str | float, scenario: Scenario, events: Mapping[str, Sequence[float]]
) -> float | None:
    """Seconds of a reference; None for ``takeover``/``release`` when none happened."""
    if isinstance(ref, float):
        return ref
    if ref in ("takeover", "release"):
        times = events.get(ref, ())
        return times[0] if times else None
    name, _, edge = ref.partition(".")
    effect = scenario.effect(name)
    return effect.end_s if edge == "end" else effect.start_s
