"""Plain record classes for the modules every command imports (state, index).

`@dataclass` imports dataclasses and, through it, inspect, ast, dis and tokenize: as much as
a bare Python start, paid by `onager list` on an empty project. These classes write their
`__init__` by hand and take equality, repr and the dict form from the fields named here.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Record:
    """Equal when of the same class with equal FIELDS; repr and as_dict in FIELDS order.
    Mutable, hence unhashable, as a dataclass with eq=True is."""

    FIELDS: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.FIELDS)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({shown})"

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (lists and dicts copied, as dataclasses.asdict copies them)."""
        out: dict[str, Any] = {}
        for name in self.FIELDS:
            value = getattr(self, name)
            out[name] = value.copy() if isinstance(value, (list, dict)) else value
        return out
