"""The house style for a technique's config section (DESIGN.md section 4): a dataclass with typed defaults,
validated in `__post_init__`, a JSON round-trip that rejects unknown keys by name, and a `version`.

Part of compact's base layer: techniques (hat/, token_pruning/, quant/) subclass it for their configs.
"""

from __future__ import annotations

from dataclasses import asdict, fields


class ConfigSection:
    """Mixin for config dataclasses: `to_dict`, and `from_dict` that names unknown keys and the known ones."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}.")
        return cls(**data)

    def check_version(self, supported: int) -> None:
        if getattr(self, "version", supported) != supported:
            raise ValueError(f"{type(self).__name__} version {self.version} is not supported (expected {supported}).")
