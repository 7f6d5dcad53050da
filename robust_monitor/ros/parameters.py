"""Declaring ROS parameters from a table: descriptors with units, ranges and read-only rules.

A node lists its parameters as ``ParamSpec`` rows; ``declare_all`` declares them with a
``ParameterDescriptor`` each (description with the unit, ``FloatingPointRange`` /
``IntegerRange``, ``additional_constraints``, ``read_only``) and, instead of letting a bad
override raise out of the constructor, falls back to the default and returns the problem, so the
node can stay up and report it. ``check_value`` is the same check for updates at run time.

Tuning classes (``Tuning``):

- ``STARTUP``: fixed at start (topics, QoS); always read-only.
- ``GUARDED``: safety-relevant (model, certification thresholds); read-only unless the node is
  started with ``allow_runtime_tuning:=true``.
- ``RUNTIME``: harmless to change while running (reporting periods).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

ParameterValue = bool | int | float | str | list[float]


class Tuning(enum.Enum):
    """When a parameter may change (see the module docstring)."""

    STARTUP = "startup"
    GUARDED = "guarded"
    RUNTIME = "runtime"


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter: name, default, what it means (with its unit) and what values are allowed.

    ``default`` is a value, or a ``Parameter.Type`` for a parameter that is unset by default
    (read back as None). ``check`` returns the reason a value is refused, or None.
    """

    name: str
    default: ParameterValue | Parameter.Type
    description: str
    tuning: Tuning
    value_range: FloatingPointRange | IntegerRange | None = None
    constraints: str = ""
    check: Callable[[Any], str | None] | None = None

    @property
    def type(self) -> Parameter.Type:
        if isinstance(self.default, Parameter.Type):
            return self.default
        return Parameter.Type.from_parameter_value(self.default)


def float_range(low: float, high: float) -> FloatingPointRange:
    return FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)


def int_range(low: int, high: int) -> IntegerRange:
    return IntegerRange(from_value=int(low), to_value=int(high), step=1)


def descriptor(spec: ParamSpec, allow_runtime_tuning: bool) -> ParameterDescriptor:
    """The ParameterDescriptor of ``spec`` (read-only according to its tuning class)."""
    read_only = spec.tuning is Tuning.STARTUP or (
        spec.tuning is Tuning.GUARDED and not allow_runtime_tuning
    )
    when = {
        Tuning.STARTUP: "Set at start-up only.",
        Tuning.GUARDED: "Read-only unless the node is started with allow_runtime_tuning:=true.",
        Tuning.RUNTIME: "May be changed at run time.",
    }[spec.tuning]
    result = ParameterDescriptor(
        name=spec.name,
        type=spec.type.value,
        description=f"{spec.description} {when}",
        additional_constraints=spec.constraints,
        read_only=read_only,
    )
    if isinstance(spec.value_range, FloatingPointRange):
        result.floating_point_range = [spec.value_range]
    elif isinstance(spec.value_range, IntegerRange):
        result.integer_range = [spec.value_range]
    return result


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is not allowed for ``spec`` (type, range, own check), or None when it is."""
    kind = spec.type
    if kind is Parameter.Type.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{spec.name} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{spec.name} must be finite, got {value!r}"
    elif kind is Parameter.Type.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{spec.name} must be an integer, got {value!r}"
    elif kind is Parameter.Type.BOOL:
        if not isinstance(value, bool):
            return f"{spec.name} must be true or false, got {value!r}"
    elif kind is Parameter.Type.STRING and not isinstance(value, str):
        return f"{spec.name} must be a string, got {value!r}"
    rng = spec.value_range
    if rng is not None and isinstance(value, (int, float)):
        low, high = sorted((rng.from_value, rng.to_value))
        if not low <= value <= high:
            return f"{spec.name} must be in [{low}, {high}], got {value!r}"
    return spec.check(value) if spec.check is not None else None


def read_value(node: Node, name: str) -> Any:
    """A declared parameter's value (None when it is unset); arrays come back as lists."""
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        return None
    if value is not None and not isinstance(value, (bool, int, float, str)):
        return list(value)
    return value


def declare_all(
    node: Node, specs: Iterable[ParamSpec], allow_runtime_tuning: bool
) -> tuple[dict[str, Any], list[str]]:
    """Declare every spec on ``node``; returns (values, problems with the start-up values).

    An override rclpy refuses (wrong type, out of range) is replaced by the default; a value that
    fails ``check_value`` is kept. Both are reported in ``problems``, so the node can stay up and
    say what is wrong; nothing raises out of here.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in specs:
        desc = descriptor(spec, allow_runtime_tuning)
        try:
            node.declare_parameter(spec.name, spec.default, desc)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            problems.append(f"parameter {spec.name}: {exc}; using the default")
            node.declare_parameter(spec.name, spec.default, desc, ignore_override=True)
        value = read_value(node, spec.name)
        reason = None if value is None else check_value(spec, value)
        if reason is not None:
            problems.append(f"parameter {reason}")
        values[spec.name] = value
    return values, problems


def by_name(specs: Iterable[ParamSpec]) -> Mapping[str, ParamSpec]:
    return {spec.name: spec for spec in specs}
