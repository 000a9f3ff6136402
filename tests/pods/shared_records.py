"""Classes importable on both sides of a pod (copied into the pod folder by the tests,
and imported by the tests from tests/pods): values of them come back as themselves."""

import dataclasses
import enum
import typing
from collections import namedtuple

Point = namedtuple("Point", "x y")


class Pair(typing.NamedTuple):
    left: typing.Any
    right: typing.Any = None


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclasses.dataclass
class Config:
    name: str
    sizes: list = dataclasses.field(default_factory=list)
    extra: typing.Any = None


@dataclasses.dataclass(frozen=True)
class Frozen:
    key: str
    value: int = 0
