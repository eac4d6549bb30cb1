"""Scenario descriptions (what the CLI lists) and typed scenario options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import GeneratorError
from .manifest import JSONDict, OptionValue

Transport = Literal["tcp", "udp"]

OptionInput = bool | int | float | str | Sequence[str]
"""What a caller may pass as a scenario option (lists of strings are accepted for tuples)."""


@dataclass(frozen=True)
class ScenarioInfo:
    """What a scenario is, for listings and for option checking."""

    name: str
    description: str
    default_port: int | None
    """The tutorial's port (``None``: no server; the client picks a closed port itself)."""
    transports: tuple[Transport, ...]
    ipv6: bool
    """Whether the scenario also runs on ::1."""
    default_options: Mapping[str, OptionValue] = field(default_factory=dict, hash=False)
    option_help: Mapping[str, str] = field(default_factory=dict, hash=False)
    has_server: bool = True

    def to_dict(self) -> JSONDict:
        return {
            "name": self.name,
            "description": self.description,
            "default_port": self.default_port,
            "transports": list(self.transports),
            "ipv6": self.ipv6,
            "has_server": self.has_server,
            "default_options": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in self.default_options.items()},
            "option_help": dict(self.option_help),
        }


def _type_name(value: OptionValue) -> str:
    if isinstance(value, tuple):
        return "list of strings"
    return type(value).__name__


def resolve_options(info: ScenarioInfo, given: Mapping[str, object]) -> dict[str, OptionValue]:
    """The scenario's defaults overlaid with ``given``, type-checked against the defaults."""
    out = dict(info.default_options)
    for key, value in given.items():
        if key not in info.default_options:
            known = ", ".join(sorted(info.default_options)) or "none"
            raise GeneratorError(f"scenario {info.name!r} has no option {key!r}",
                                 hint=f"its options are: {known}")
        default = info.default_options[key]
        out[key] = _coerce(info.name, key, default, value)
    return out


def _coerce(scenario: str, key: str, default: OptionValue, value: object) -> OptionValue:
    bad = GeneratorError(
        f"option {key!r} of scenario {scenario!r} must be a {_type_name(default)}, not {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise bad
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise bad
    return tuple(str(item) for item in items)


class Opts:
    """Typed read access to resolved options."""

    def __init__(self, scenario: str, values: Mapping[str, OptionValue]) -> None:
        self.scenario = scenario
        self.values = dict(values)

    def _get(self, key: str) -> OptionValue:
        try:
            return self.values[key]
        except KeyError:
            raise GeneratorError(f"scenario {self.scenario!r} has no option {key!r}") from None

    def get_bool(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise GeneratorError(f"option {key!r} must be a bool, not {value!r}")
        return value

    def get_int(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise GeneratorError(f"option {key!r} must be an int, not {value!r}")
        return value

    def get_float(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GeneratorError(f"option {key!r} must be a number, not {value!r}")
        return float(value)

    def get_str(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise GeneratorError(f"option {key!r} must be a string, not {value!r}")
        return value

    def get_strs(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, tuple):
            raise GeneratorError(f"option {key!r} must be a list of strings, not {value!r}")
        return value

    def require(self, ok: bool, key: str, why: str) -> None:
        if not ok:
            raise GeneratorError(
                f"option {key}={self.values.get(key)!r} of scenario {self.scenario!r}: {why}")
