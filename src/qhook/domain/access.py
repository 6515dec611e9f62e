"""Who is asking and what they may do: roles and set restrictions, pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class Principal:
    """A user acting through an API key or a UI session."""

    user_id: int
    name: str
    role: Role
    set_ids: frozenset[int] | None = None  # None: every set
    key_id: int | None = None

    def has_role(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def can_use_set(self, set_id: int) -> bool:
        return self.set_ids is None or set_id in self.set_ids


def role_from_text(text: str) -> Role:
    """Validate a role name; raises ValueError naming the choices."""
    for role in ROLES:
        if role == text:
            return role
    raise ValueError(f"role must be one of {', '.join(ROLES)}, got {text!r}")
