"""The world events are drawn from: hosts, their software and accounts, people and attackers.

``model`` is the data, ``build`` makes a world from a seed and a size, ``files`` reads a user's world
file and writes a world out.
"""

from auditgen.world.build import DEFAULT_HOSTS, DEFAULT_PEOPLE, MAX_HOSTS, MAX_PEOPLE, build
from auditgen.world.model import UNSET_ID, Account, Attackers, Host, Person, Profile, Release, World

__all__ = [
    "DEFAULT_HOSTS",
    "DEFAULT_PEOPLE",
    "MAX_HOSTS",
    "MAX_PEOPLE",
    "UNSET_ID",
    "Account",
    "Attackers",
    "Host",
    "Person",
    "Profile",
    "Release",
    "World",
    "build",
]
