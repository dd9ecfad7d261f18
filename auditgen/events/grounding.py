"""Events fitted to a world: who may do what where, the details that follow from it, and auditd's fields.

A template draws values independently; a world says which go together. `Grounding.fit` takes the host and
user an event already has (from the caller, the session or a template that names them) or draws them from
the world in the role the event needs (an admin for sudo, an unknown name for `unknown_user`, ...), and
returns the details that must agree with them (the service a host runs, the package version its release
ships, the address a person connects from) and the fields auditd records for such an event. A host or
user outside the world is accepted as given: it gets auditd's fields, and nothing else is changed.

Accounts created and deleted by events are kept in a small ledger, so a name is never created twice on a
host while it lives and only a created account is deleted. Numbers auditd assigns per host (the session
number `ses`) come from a counter per host, so two sessions on a host never share one.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import random
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from auditgen.world.hours import Duty
from auditgen.world.model import UNSET_ID, Account, Host, Profile, World

# auditd's executable for each kind of event (the record type in the comment; see docs/world.md).
EXE = {
    "sshd": "/usr/sbin/sshd",  # USER_LOGIN, USER_LOGOUT (ssh, sftp)
    "login": "/usr/bin/login",  # USER_LOGIN, USER_LOGOUT (console)
    "sudo_command": "/usr/bin/sudo",  # USER_CMD
    "systemd": "/usr/lib/systemd/systemd",  # SERVICE_START, SERVICE_STOP
    "useradd": "/usr/sbin/useradd",  # ADD_USER
    "userdel": "/usr/sbin/userdel",  # DEL_USER
    "usermod": "/usr/sbin/usermod",  # USER_MGMT
    "passwd": "/usr/bin/passwd",  # USER_CHAUTHTOK
    "chpasswd": "/usr/sbin/chpasswd",  # USER_CHAUTHTOK
    "sh": "/usr/bin/sh",  # SYSCALL + PATH (ssh-copy-id appends the key)
    "chmod": "/usr/bin/chmod",  # SYSCALL (fchmodat) + PATH
    "chown": "/usr/bin/chown",  # SYSCALL (fchownat) + PATH
    "crontab": "/usr/bin/crontab",  # SYSCALL + PATH
    "xtables": "/usr/sbin/xtables-nft-multi",  # NETFILTER_CFG
    "apt": "/usr/bin/apt-get",  # SOFTWARE_UPDATE
    "dnf": "/usr/bin/dnf",  # SOFTWARE_UPDATE
}
EDITOR = {"apt": "/usr/bin/vim.basic", "dnf": "/usr/bin/vi"}  # SYSCALL + PATH (file_modified)
AUDIT_FIELDS = frozenset(("pid", "uid", "auid", "ses", "exe", "terminal", "res", "addr", "hostname"))
_ADMIN_WORK = frozenset(
    {
        "sudo_command",
        "file_modified",
        "service_status_change",
        "user_account_management",
        "permission_change",
        "package_install",
        "package_remove",
        "firewall_rule_change",
        "cron_job_modified",
    }
)
_OWN_ACCOUNT_WORK = frozenset({"password_change", "ssh_key_added", "user_login", "user_logout"})
_PASSWORD_REASONS = frozenset({"invalid_password", "expired_password"})
# Details fit() always sets when the event has them: a plain event need not draw them from its template.
REPLACED: Mapping[str, frozenset[str]] = {
    "user_login": frozenset({"ip_address"}),
    "user_logout": frozenset({"ip_address"}),
    "sudo_command": frozenset({"command", "cwd", "tty"}),
    "file_modified": frozenset({"resource"}),
    "permission_change": frozenset({"resource", "new_owner"}),
    "service_status_change": frozenset({"resource"}),
    "package_install": frozenset({"package", "version", "manager", "command"}),
    "package_remove": frozenset({"package", "version", "manager", "command"}),
    "password_change": frozenset({"tty"}),
}
_WATCHED = ("passwd", "shadow", "group", "sudoers", "ssh", "hosts", "crontab")
_PROTECTED_PACKAGES = frozenset({"openssh-server", "sudo", "rsyslog", "cron", "cronie"})
_MAX_PLAIN_ACCOUNTS = 256  # accounts plain events created and have not deleted yet, world-wide
_MAX_PID = 4_194_304  # Linux's pid_max on 64-bit systems
_PIDS = _MAX_PID - 1000  # pids drawn for new processes: 1000 and up
_AS_USER = frozenset(("sudo_command", "password_change", "ssh_key_added"))
_LOGIN_EXE, _SSHD_EXE = EXE["login"], EXE["sshd"]
_CONSOLES = tuple(f"/dev/tty{n}" for n in range(1, 7))
_PSEUDO_TERMINALS = tuple(f"/dev/pts/{n}" for n in range(8))
_SERVICE_RECORD = {
    "pid": 1,
    "uid": 0,
    "auid": UNSET_ID,
    "ses": UNSET_ID,
    "exe": EXE["systemd"],
    "terminal": "?",
}
# SERVICE_START and SERVICE_STOP: systemd's record, the same for every service event but its result.
_SERVICE_DONE: Mapping[str, Any] = MappingProxyType({**_SERVICE_RECORD, "res": "success"})
_SERVICE_FAILED: Mapping[str, Any] = MappingProxyType({**_SERVICE_RECORD, "res": "failed"})
_DRAWS = 8  # tries at a host with the account an event needs before taking any host
# The accounts of a host in each role an event may need: "admin" (may sudo, not root), "developer", "login".
ROLE_ACCOUNTS: Mapping[str, Callable[[Host], tuple[Account, ...]]] = {
    "admin": operator.attrgetter("admins"),
    "developer": operator.attrgetter("developers"),
    "login": operator.attrgetter("logins"),
}


class Fit(NamedTuple):
    """What an event must say to agree with the world: its host and user, the details that follow from
    them (overrides of the template's), and auditd's fields (added after every other detail). `retry`:
    the event cannot happen now (a deletion with nothing to delete); a plain event is drawn again."""

    host: str
    user: str
    details: dict[str, Any]
    audit: Mapping[str, Any]
    retry: bool = False


T = TypeVar("T")
_RETRY = Fit("", "", {}, {}, retry=True)


def _one(rng: random.Random, values: Sequence[T]) -> T:
    """rng.choice without its Python-level rejection loop: this runs several times per event."""
    return values[int(rng.random() * len(values))]


def _below(rng: random.Random, low: int, high: int) -> int:
    """A whole number in [low, high), as _one draws."""
    return low + int(rng.random() * (high - low))


def pseudo_uid(name: str) -> int:
    """A stable uid for an account outside the world (a template or a caller named it)."""
    return 0 if name == "root" else 2000 + zlib.crc32(name.encode()) % 60000


def _terminal(session: Mapping[str, Any] | None, rng: random.Random) -> str:
    """The session's terminal (pts/N or ttyN), or a fresh pseudo-terminal for an event in no session."""
    if session is not None:
        terminal = session.get("terminal")
        if isinstance(terminal, str):
            return terminal
    return f"pts/{_below(rng, 0, 8)}"


@functools.cache
def _commands(profile: Profile) -> tuple[str, ...]:
    """Commands an admin runs with sudo on such a host that change nothing another event reports."""
    apt = profile.release.manager == "apt"
    commands = [
        "tail -n 200 /var/log/auth.log" if apt else "tail -n 200 /var/log/secure",
        "apt-get update" if apt else "dnf check-update",
        "ufw status verbose" if apt else "firewall-cmd --list-all",
        "cat /etc/shadow",
        "crontab -l -u root",
        "ss -tlnp",
    ]
    for service in profile.services:
        commands += [f"systemctl status {service}", f"journalctl -u {service} --since today"]
    # Editing a watched file is a file_modified event of its own; only the role's own files here.
    commands += [f"vim {path}" for path in profile.files if not any(w in path for w in _WATCHED)]
    if "docker" in profile.services:
        commands.append("docker ps -a")
    return tuple(commands)


@functools.cache
def _owners(profile: Profile) -> tuple[str, ...]:
    nobody = "nobody:nogroup" if profile.release.manager == "apt" else "nobody:nobody"
    owners = [f"{a.name}:{a.name}" for a in profile.system_accounts if a.uid not in (0, 1, 65534)]
    return (*owners, nobody)


@functools.cache
def _installable(profile: Profile) -> tuple[str, ...]:
    return tuple(profile.release.versions)


@functools.cache
def _removable(profile: Profile) -> tuple[str, ...]:
    return tuple(p for p in profile.packages if p not in _PROTECTED_PACKAGES)


@functools.cache
def _groups(profile: Profile, admins: bool) -> tuple[str, ...]:
    """Groups an account may be put in; the admin group only for a new account (a member added to it
    later would turn a developer into a sudoer that other events still treat as one without sudo)."""
    groups = ["users", "developers"]
    if admins:
        groups.append(profile.release.admin_group)
    if "docker" in profile.services:
        groups.append("docker")
    return tuple(groups)


class Grounding:
    """Fits the events of one stream to a world; holds the stream's ledger (accounts, session numbers)."""

    def __init__(
        self, world: World, pools: Mapping[str, tuple[Any, ...]], clock: Callable[[], float] = time.time
    ) -> None:
        """clock: the events' time in seconds since the epoch, which says who is at work."""
        self.world = world
        self.duty = Duty(world.people, clock)
        self._hosts = world.hosts
        self._new_names = tuple(n for n in pools.get("new_accounts", ()) if isinstance(n, str)) or (
            "frank",
            "grace",
            "heidi",
        )
        self._attacker_nets = tuple(ipaddress.ip_network(n) for n in world.attackers.networks)
        # host name -> accounts created by events and not deleted yet
        self._created: dict[str, dict[str, Account]] = {}
        self._plain_created: deque[tuple[str, str]] = deque()
        self._ses: dict[str, int] = {}
        self._by_user: dict[str, tuple[Host, ...]] | None = None
        self._working_off: frozenset[str] | None = None  # the duty _working_now is for
        self._working_now: dict[str, tuple[tuple[tuple[Host, Account], ...], ...]] = {}
        self._places_by_role: dict[str, dict[str, tuple[tuple[Host, Account], ...]]] = {}

    # -- the ledger ----------------------------------------------------------------------------------

    def account(self, host: Host, name: str) -> Account | None:
        """The account of that name on the host, from the world or created by an event since."""
        return host.account(name) or self._created.get(host.name, {}).get(name)

    def new_account_name(
        self, host: Host, rng: random.Random, allows: Callable[[str], bool] = lambda name: True
    ) -> str | None:
        """A name for a new account on the host: one that does not exist there now (and that `allows`
        takes), from the catalog's new accounts, else one of them with a number (None: none found)."""
        free = [n for n in self._new_names if self.account(host, n) is None and allows(n)]
        if free:
            return _one(rng, free)
        for _ in range(_DRAWS * 8):
            name = f"{_one(rng, self._new_names)}{10 + int(rng.random() * 990)}"
            if self.account(host, name) is None and allows(name):
                return name
        return None

    def create(self, host: Host, name: str, uid: int | None = None) -> Account:
        """Record an account created on the host; it exists until delete()."""
        taken = {a.uid for a in host.accounts} | {a.uid for a in self._created.get(host.name, {}).values()}
        uid = uid if uid is not None else max(taken | {1999}) + 1
        account = Account(name, uid, "developer", (name, "users"))
        self._created.setdefault(host.name, {})[name] = account
        return account

    def create_plain(self, host: Host, name: str) -> Account:
        """Record an account created outside a session story (a scenario run's), as a plain event's
        creation is: it exists until a plain deletion deletes it, oldest first."""
        account = self.create(host, name)
        self._plain_created.append((host.name, name))
        return account

    def delete(self, host_name: str, name: str) -> None:
        created = self._created.get(host_name)
        if created is not None:
            created.pop(name, None)
            if not created:
                del self._created[host_name]

    def next_ses(self, host: str) -> int:
        """The host's next audit session number (each host counts from its own start since boot)."""
        ses = self._ses.get(host)
        if ses is None:
            ses = 1 + zlib.crc32(host.encode()) % 400
        self._ses[host] = ses + 1
        return ses

    # -- choosing ----------------------------------------------------------------------------------

    def host_for(self, user: str, rng: random.Random) -> Host | None:
        """A host where the user has an account (None if it has none in the world)."""
        hosts = self._hosts_by_user().get(user)
        if hosts:
            return _one(rng, hosts)
        return _one(rng, self._hosts) if user == "root" else None

    def _hosts_by_user(self) -> Mapping[str, tuple[Host, ...]]:
        """The hosts each account name is on, indexed on first use."""
        if self._by_user is None:
            by_user: dict[str, list[Host]] = {}
            for host in self._hosts:
                for account in host.accounts:
                    by_user.setdefault(account.name, []).append(host)
            self._by_user = {name: tuple(hosts) for name, hosts in by_user.items()}
        return self._by_user

    def attacker(self, host: Host, rng: random.Random) -> tuple[str, str]:
        """A dictionary name that does not exist on the host, and an outside address it comes from."""
        names = self.world.attackers.names
        name = _one(rng, names)
        for _ in range(_DRAWS):
            if self.account(host, name) is None:
                break
            name = _one(rng, names)
        else:
            name = f"{name}{_below(rng, 10, 100)}"
        net = _one(rng, self._attacker_nets)
        n = int(net.network_address) + 1 + _below(rng, 0, net.num_addresses - 2)
        return name, str(ipaddress.ip_address(n))

    def source(self, user: str, rng: random.Random) -> str:
        """Where a person connects from: their workstation, sometimes the VPN; others from the VPN range."""
        person = self.world.person(user)
        if person is not None:
            addresses = person.addresses
            return addresses[0] if rng.random() < 0.75 or len(addresses) == 1 else _one(rng, addresses[1:])
        return f"10.99.12.{200 + zlib.crc32(user.encode()) % 50}"

    def pick(self, rng: random.Random, want: str) -> tuple[Host, Account]:
        """A host and an account on it in the role: "admin" (may sudo, not root), "developer", "login".

        A person at work now, on one of their hosts; where nobody of the team is at work, whoever is on
        call: any account in the role, service accounts (deploy) included, on any host."""
        off = self.duty.off()
        working = self._working_now.get(want) if off is self._working_off else None
        if working is None:
            working = self._working(want, off)
        if working:
            pairs = working[int(rng.random() * len(working))]
            return pairs[int(rng.random() * len(pairs))]
        hosts = self._hosts
        role = ROLE_ACCOUNTS[want]
        host = _one(rng, hosts)
        for _ in range(_DRAWS):
            candidates = role(host)
            if candidates:
                return host, _one(rng, candidates)
            host = _one(rng, hosts)
        for host in hosts:
            candidates = role(host)
            if candidates:
                return host, _one(rng, candidates)
        root = host.account("root")
        assert root is not None
        return host, root

    def _working(self, want: str, off: frozenset[str]) -> tuple[tuple[tuple[Host, Account], ...], ...]:
        """For each person at work (not in off) with accounts in the role: their hosts and accounts there
        (made again when the duty changes, each quarter hour)."""
        if off is not self._working_off:
            self._working_off = off
            self._working_now = {}
        working = self._working_now.get(want)
        if working is None:
            places = self._places(want)
            working = tuple(
                places[p.name] for p in self.world.people if p.name in places and p.name not in off
            )
            self._working_now[want] = working
        return working

    def _places(self, want: str) -> Mapping[str, tuple[tuple[Host, Account], ...]]:
        """Each person's hosts and accounts in the role, indexed once per role."""
        places = self._places_by_role.get(want)
        if places is None:
            role, people = ROLE_ACCOUNTS[want], {p.name for p in self.world.people}
            found: dict[str, list[tuple[Host, Account]]] = {}
            for host in self._hosts:
                for account in role(host):
                    if account.name in people:
                        found.setdefault(account.name, []).append((host, account))
            places = self._places_by_role[want] = {name: tuple(p) for name, p in found.items()}
        return places

    def _someone(self, accounts: Sequence[Account], rng: random.Random) -> Account | None:
        """One of the accounts: a person at work now if any of them is (None: no accounts)."""
        if not accounts:
            return None
        off = self.duty.off()
        return _one(rng, [a for a in accounts if a.name not in off] or accounts)

    # -- fitting -----------------------------------------------------------------------------------

    def fit(
        self,
        event_type: str,
        result: str,
        drawn: Mapping[str, Any],
        host_name: str | None,
        user_name: str | None,
        session: Mapping[str, Any] | None,
        rng: random.Random,
        plain: bool,
        given: Mapping[str, Any] | None = None,
        keys: AbstractSet[str] | None = None,
    ) -> Fit:
        """The event fitted to the world. host_name, user_name: fixed by the caller, the session or the
        template (None: the world chooses). drawn: the event's details so far, the template's and the
        caller's (read, never changed); given: the caller's alone, which win (an address, a protocol).
        plain: a generated event in no session (it may be retried; it owns its own audit session).
        keys: the details the event has (default: drawn's); fit sets only those."""
        given = given or {}
        keys = drawn.keys() if keys is None else keys
        host = self.world.host(host_name) if host_name is not None else None
        if host_name is not None and host is None:
            # Outside the world: as given, with auditd's fields only.
            user = user_name if user_name is not None else "root"
            audit = self._audit(event_type, result, pseudo_uid(user), host_name, session, rng, drawn)
            return Fit(host_name, user, {}, audit)
        if event_type == "user_login" and result != "SUCCESS":
            return self._failed_login(drawn, given, keys, host, user_name, session, rng)
        if plain and event_type == "user_account_management" and result == "DELETED" and host is None:
            if not self._plain_created:
                return _RETRY
            deleted_on, deleted = self._plain_created.popleft()
            self.delete(deleted_on, deleted)
            host = self.world.host(deleted_on)
            assert host is not None
            drawn = {**drawn, "resource": deleted}
        want = "admin" if event_type in _ADMIN_WORK else "login"
        if event_type == "sudo_command" and result != "SUCCESS":
            want = "developer"
        account: Account | None = None
        if host is None and user_name is not None:
            host = self.host_for(user_name, rng)
            if host is None:  # a user outside the world, on any host
                host = _one(rng, self._hosts)
        if host is None:
            host, account = self.pick(rng, want)
        elif user_name is None:
            account = self._someone(ROLE_ACCOUNTS[want](host), rng) or host.account("root")
        name = user_name if user_name is not None else account.name if account is not None else "root"
        if account is None:
            account = self.account(host, name)
        details = self._details(
            event_type, result, drawn, given, keys, host, account, name, session, rng, plain
        )
        if details is None:
            return _RETRY
        uid = account.uid if account is not None else pseudo_uid(name)
        audit = self._audit(
            event_type, result, uid, host.name, session, rng, details, drawn, host.profile.release.manager
        )
        return Fit(host.name, name, details, audit)

    def _failed_login(
        self,
        drawn: Mapping[str, Any],
        given: Mapping[str, Any],
        keys: AbstractSet[str],
        host: Host | None,
        user_name: str | None,
        session: Mapping[str, Any] | None,
        rng: random.Random,
    ) -> Fit:
        """sshd's "Invalid user" only for a name the host does not have; other failures for its accounts,
        and password failures over SSH only where the host takes passwords."""
        reason = drawn.get("reason")
        protocol = drawn.get("protocol", "ssh")
        details: dict[str, Any] = {}
        if host is None and user_name is None and reason != "unknown_user":
            host, mistyped = self.pick(rng, "login")  # a person at work mistypes, where one is
            user_name = mistyped.name
        if host is None:
            host = self.host_for(user_name, rng) if user_name is not None else None
            if host is None:
                host = _one(rng, self._hosts)
        if user_name is None and reason == "unknown_user":
            user_name, address = self.attacker(host, rng)
            if "protocol" not in given:
                protocol = details["protocol"] = "ssh"  # attackers come over the network
            if protocol != "console" and "ip_address" not in given:
                details["ip_address"] = address
        elif user_name is None:
            someone = self._someone(host.logins, rng)
            user_name = someone.name if someone is not None else "root"
        exists = self.account(host, user_name) is not None
        if "reason" in drawn:
            if not exists:
                reason = "unknown_user"
            elif reason == "unknown_user":
                reason = "invalid_password"
            if protocol != "console" and not host.password_ssh and reason in _PASSWORD_REASONS:
                reason = "invalid_public_key"
            if protocol == "console" and reason == "invalid_public_key":
                reason = "invalid_password"
            details["reason"] = reason
        if "ip_address" not in details:
            self._connection(details, keys, given, user_name, protocol, session, rng)
        details = {key: value for key, value in details.items() if key in keys}
        audit = self._audit("user_login", "FAILURE", UNSET_ID, host.name, session, rng, details, drawn)
        return Fit(host.name, user_name, details, audit)

    def _connection(
        self,
        details: dict[str, Any],
        keys: AbstractSet[str],
        given: Mapping[str, Any],
        user: str,
        protocol: Any,
        session: Mapping[str, Any] | None,
        rng: random.Random,
    ) -> None:
        """Set a login's address in details: none on the console; the session's, or where the person
        connects from."""
        if protocol == "console":
            if "ip_address" in keys:
                details["ip_address"] = None
            return
        if given.get("ip_address"):
            address = given["ip_address"]
        elif session is not None and session.get("source_ip"):
            address = session["source_ip"]
        else:
            address = self.source(user, rng)
        if "ip_address" in keys:
            details["ip_address"] = address

    def _details(
        self,
        event_type: str,
        result: str,
        drawn: Mapping[str, Any],
        given: Mapping[str, Any],
        keys: AbstractSet[str],
        host: Host,
        account: Account | None,
        name: str,
        session: Mapping[str, Any] | None,
        rng: random.Random,
        plain: bool,
    ) -> dict[str, Any] | None:
        """Details that follow from the host and user, for the keys the template has."""
        profile = host.profile
        out: dict[str, Any] = {}
        if event_type in ("user_login", "user_logout"):
            protocol = session.get("protocol", drawn.get("protocol")) if session else drawn.get("protocol")
            self._connection(out, keys, given, name, protocol, session, rng)
        elif event_type == "sudo_command":
            out["command"] = _one(rng, _commands(profile))
            out["cwd"] = _one(rng, (account.home if account else "/root", "/tmp", "/var/log"))
        elif event_type in ("file_modified", "permission_change"):
            out["resource"] = _one(rng, profile.files)
            out["new_owner"] = _one(rng, _owners(profile))
        elif event_type == "service_status_change":
            out["resource"] = _one(rng, profile.services)
        elif event_type == "user_account_management":
            # A caller's creation in no session, of a name it leaves to the world, is recorded as a plain
            # one is; a session's story reserved its own name already.
            record = plain or (session is None and "resource" not in given)
            changed = self._account_change(result, host, rng, plain, record)
            if changed is None:
                return None
            out.update(changed)
            if result == "DELETED" and "resource" in drawn:
                out["resource"] = drawn["resource"]
        elif event_type == "package_install":
            package = _one(rng, _installable(profile))
            out.update(self._package(profile, package, "install"))
        elif event_type == "package_remove":
            out.update(self._package(profile, _one(rng, _removable(profile)), "remove"))
        elif event_type == "firewall_rule_change" and profile.release.manager == "dnf":
            out["tool"] = "firewalld"
            verb = "accept" if drawn.get("rule_action") == "allow" else "reject"
            out["rule"] = (
                f"firewall-cmd --add-rich-rule='rule family=ipv4 source address={drawn.get('source')} "
                f"port port={drawn.get('port')} protocol={drawn.get('protocol')} {verb}'"
            )
        elif event_type == "cron_job_modified" and profile.release.manager == "dnf":
            out["resource"] = str(drawn.get("resource")).replace("/crontabs/", "/")
        if "tty" in keys:
            out["tty"] = _terminal(session, rng)
        if out.keys() <= keys:  # the common case: the template has every detail the world sets
            return out
        return {key: value for key, value in out.items() if key in keys}

    def _account_change(
        self, result: str, host: Host, rng: random.Random, plain: bool, record: bool
    ) -> dict[str, Any] | None:
        """The account a user_account_management event changes; a creation that is `record`ed lives in
        the ledger until a plain deletion. None: a plain event that cannot happen now (drawn again)."""
        if result == "CREATED":
            if plain and len(self._plain_created) >= _MAX_PLAIN_ACCOUNTS:
                return None
            name = self.new_account_name(host, rng)
            if name is None:
                return None if plain else {}
            if record and len(self._plain_created) < _MAX_PLAIN_ACCOUNTS:
                self.create_plain(host, name)
            return {"resource": name, "group": _one(rng, _groups(host.profile, True))}
        if result == "DELETED":
            return {}  # fit() chose what a plain deletion deletes; a session's step names it
        member = _one(rng, host.logins) if host.logins else None
        if member is None:
            return None if plain else {}
        return {"resource": member.name, "group": _one(rng, _groups(host.profile, False))}

    @staticmethod
    def _package(profile: Profile, package: str, verb: str) -> dict[str, Any]:
        manager = profile.release.manager
        tool = "apt-get" if manager == "apt" else "dnf"
        return {
            "package": package,
            "version": profile.release.versions.get(package, profile.packages.get(package)),
            "manager": manager,
            "command": f"{tool} {verb} -y {package}",
        }

    def _audit(
        self,
        event_type: str,
        result: str,
        uid: int,
        host: str,
        session: Mapping[str, Any] | None,
        rng: random.Random,
        values: Mapping[str, Any],
        drawn: Mapping[str, Any] | None = None,
        manager: str = "apt",
    ) -> Mapping[str, Any]:
        """auditd's fields of the event's main record (see docs/world.md for each record type); values
        (the details fit set) win over drawn (the template's and the caller's). An event in no session is
        its own: a new session number of the host. Read-only: the service records share one mapping."""
        failed = result in ("FAILURE", "FAILED")
        if event_type == "service_status_change":
            return _SERVICE_FAILED if failed else _SERVICE_DONE
        drawn = drawn or {}
        if event_type in ("user_login", "user_logout"):
            protocol = session.get("protocol") if session else None
            if not protocol:
                protocol = values["protocol"] if "protocol" in values else drawn.get("protocol")
            address = values["ip_address"] if "ip_address" in values else drawn.get("ip_address")
            if not address and session:
                address = session.get("source_ip")
            return self._login_audit(
                failed, uid, host, session, rng, protocol == "console", protocol, address
            )
        in_session = session is not None and "ses" in session
        terminal = values["tty"] if "tty" in values else drawn.get("tty")
        if not terminal:
            terminal = _terminal(session, rng)
        elif isinstance(terminal, str) and terminal.startswith("/dev/"):
            terminal = terminal[5:]
        # sudo, passwd and the user's own edits run as the user; the rest as root, by way of sudo.
        return {
            "pid": 1000 + int(rng.random() * _PIDS),
            "uid": uid if event_type in _AS_USER else 0,
            "auid": session["auid"] if in_session and session else uid,
            "ses": session["ses"] if in_session and session else self.next_ses(host),
            "exe": self._exe(event_type, result, values, drawn, manager),
            "terminal": terminal,
            "res": "failed" if failed else "success",
        }

    def _login_audit(
        self,
        failed: bool,
        uid: int,
        host: str,
        session: Mapping[str, Any] | None,
        rng: random.Random,
        console: bool,
        protocol: Any,
        address: Any,
    ) -> dict[str, Any]:
        """USER_LOGIN and USER_LOGOUT: sshd's or login's record; a failed login has no auid or session."""
        addr = "?" if console or not address else address
        if failed:
            terminal = _CONSOLES[int(rng.random() * 6)] if console else "ssh"
            return {
                "pid": 1000 + int(rng.random() * _PIDS),
                "uid": 0,
                "auid": UNSET_ID,
                "ses": UNSET_ID,
                "exe": _LOGIN_EXE if console else _SSHD_EXE,
                "terminal": terminal,
                "res": "failed",
                "addr": addr,
                "hostname": addr,
            }
        in_session = session is not None and "ses" in session
        terminal = self._login_terminal(session, protocol, rng)
        return {
            "pid": session["pid"] if in_session and session else 1000 + int(rng.random() * _PIDS),
            "uid": 0,
            "auid": uid,
            "ses": session["ses"] if in_session and session else self.next_ses(host),
            "exe": _LOGIN_EXE if console else _SSHD_EXE,
            "terminal": terminal,
            "res": "success",
            "addr": addr,
            "hostname": addr,
        }

    @staticmethod
    def _login_terminal(session: Mapping[str, Any] | None, protocol: Any, rng: random.Random) -> str:
        if session is not None and isinstance(session.get("terminal"), str):
            terminal: str = session["terminal"]
            return terminal if terminal == "ssh" else f"/dev/{terminal}"
        if protocol == "console":
            return _CONSOLES[int(rng.random() * 6)]
        if protocol == "sftp":
            return "ssh"
        return _PSEUDO_TERMINALS[int(rng.random() * 8)]

    @staticmethod
    def _exe(
        event_type: str, result: str, values: Mapping[str, Any], drawn: Mapping[str, Any], manager: str
    ) -> str:
        def value(key: str) -> Any:
            return values[key] if key in values else drawn.get(key)

        if event_type == "sudo_command":
            return EXE["sudo_command"]
        if event_type == "user_account_management":
            return EXE[{"CREATED": "useradd", "DELETED": "userdel"}.get(result, "usermod")]
        if event_type == "password_change":
            return EXE["chpasswd" if value("tool") == "chpasswd" else "passwd"]
        if event_type == "ssh_key_added":
            return EXE["sh"]
        if event_type == "permission_change":
            return EXE["chown" if value("operation") == "chown" else "chmod"]
        if event_type == "cron_job_modified":
            return (
                EXE["crontab"] if str(value("resource") or "").startswith("/var/spool") else EDITOR[manager]
            )
        if event_type == "firewall_rule_change":
            return EXE["xtables"]
        if event_type in ("package_install", "package_remove"):
            return EXE["dnf" if value("manager") == "dnf" else "apt"]
        if event_type == "file_modified":
            return EDITOR[manager]
        return "?"
