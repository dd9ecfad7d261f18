"""A reader of generated events who knows Linux audit logs: every contradiction it finds, with the world.

Written apart from the generator on purpose: it knows only the world as data (the printed world, the file
format of docs/world.md) and what an expert expects of sshd, sudo, systemd and auditd; it imports nothing
from auditgen. Feed it events in stream order; `problems` lists each contradiction as "kind: detail".

Events of scenario runs (details.scenario_id) are read as every other event: drawn from the world, they
must agree with it as much (those on the world's hosts are counted apart, to show that they were read).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

UNSET = 4294967295
AUDIT_KEYS = ("pid", "uid", "auid", "ses", "exe", "terminal", "res")
PTS = re.compile(r"(/dev/)?pts/\d+")
TTY = re.compile(r"(/dev/)?tty\d+")
ADMIN_WORK = {
    "file_modified",
    "permission_change",
    "package_install",
    "package_remove",
    "firewall_rule_change",
    "cron_job_modified",
    "user_account_management",
}


@dataclass
class _Host:
    accounts: dict[str, Mapping[str, Any]]
    services: set[str]
    packages: dict[str, str]
    versions: Mapping[str, str]
    password_ssh: bool
    admin_group: str


@dataclass
class _Session:
    host: str
    user: str
    ip: Any
    protocol: Any = None
    terminal: str | None = None
    ses: Any = None
    auid: Any = None
    expected: list[tuple[str, str, str]] = field(default_factory=list)  # (event_type, result, resource)


def _bare(terminal: Any) -> str:
    return (
        terminal[len("/dev/") :]
        if isinstance(terminal, str) and terminal.startswith("/dev/")
        else str(terminal)
    )


class Checker:
    """Reads a stream of events against a world; counts what it checked, lists what contradicts."""

    def __init__(self, world: Mapping[str, Any]) -> None:
        self.problems: list[str] = []
        self.checked: Counter[str] = Counter()
        releases = world["releases"]
        profiles = world["profiles"]
        people = {p["name"]: p for p in world["people"]}
        self._hosts: dict[str, _Host] = {}
        for h in world["hosts"]:
            profile = profiles[h["profile"]] if isinstance(h["profile"], str) else h["profile"]
            release = releases[profile["release"]]
            accounts = {a["name"]: a for a in profile["system_accounts"]}
            for a in h["accounts"]:
                if isinstance(a, str):  # a person's account, by name: ops people have sudo
                    person = people.get(a)
                    sudo = person is not None and person["team"] == "ops"
                    uid = person["uid"] if person else None
                    a = {"name": a, "uid": uid, "sudo": sudo, "groups": [a], "known_by_name": True}
                accounts[a["name"]] = a
            self._hosts[h["name"]] = _Host(
                accounts,
                set(profile["services"]),
                dict(profile["packages"]),
                release["versions"],
                h.get("password_ssh", False),
                release["admin_group"],
            )
        self._attackers = [ipaddress.ip_network(n) for n in world["attackers"]["networks"]]
        self._created: dict[str, set[str]] = {}  # host -> names created by events, alive
        self._deleted: dict[str, set[str]] = {}  # host -> names deleted, not created again
        self._sessions: dict[str, _Session] = {}
        self._ses_owner: dict[tuple[str, int], str] = {}  # (host, ses) -> the session or event that has it
        self._versions: dict[tuple[str, str], str] = {}

    def problem(self, kind: str, event: Mapping[str, Any], detail: str) -> None:
        self.problems.append(f"{kind}: {detail} [{event.get('event_type')} {event.get('event_id')}]")

    def read(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.check(event)

    def finish(self) -> None:
        """Sessions that ended with effects still owed (checked at logout) are reported there; this
        reports nothing more, since sessions still open may yet see them."""

    # -- one event ----------------------------------------------------------------------------------

    def check(self, e: Mapping[str, Any]) -> None:
        d = e["details"]
        kind = e["event_type"]
        self._connection(e, d, kind)
        host_name = e["server_hostname"]
        host = self._hosts.get(host_name)
        self._audit_fields(e, d, kind)
        if host is None:
            self.checked["hosts outside the world"] += 1
            return
        if "scenario_id" in d:
            self.checked["scenario events"] += 1  # read against the world like the rest
        self._session(e, d, kind, host_name)
        self._accounts(e, d, kind, host_name, host)
        self._ses(e, d, host_name)
        if kind == "sudo_command":
            self._sudo(e, d, host_name, host)
        elif kind == "service_status_change":
            if d.get("resource") not in host.services:
                self.problem("service not on host", e, f"{d.get('resource')} on {host_name}")
            self.checked["services"] += 1
        elif kind in ("package_install", "package_remove"):
            self._package(e, d, kind, host_name, host)

    def _connection(self, e: Mapping[str, Any], d: Mapping[str, Any], kind: str) -> None:
        """Console logins have a local terminal and no address; SSH logins an address and a pts."""
        if kind not in ("user_login", "user_logout"):
            return
        protocol = d.get("protocol")
        ip = d.get("ip_address")
        terminal = d.get("terminal")
        if protocol == "console":
            self.checked["console logins"] += 1
            if ip not in (None, ""):
                self.problem("console login from a remote address", e, str(ip))
            if terminal is not None and not TTY.fullmatch(str(terminal)):
                self.problem("console login without a local tty", e, str(terminal))
            if d.get("addr") not in (None, "?"):
                self.problem("console login with auditd addr", e, str(d.get("addr")))
        elif protocol in ("ssh", "sftp"):
            self.checked["ssh logins"] += 1
            try:
                ipaddress.ip_address(str(ip))
            except ValueError:
                self.problem("ssh login without a remote address", e, repr(ip))
            if terminal is None:
                return
            succeeded = e["action_result"] == "SUCCESS"
            if protocol == "ssh" and succeeded and not PTS.fullmatch(str(terminal)):
                self.problem("ssh session without a pts", e, str(terminal))
            if TTY.fullmatch(str(terminal)):
                self.problem("ssh login on a local tty", e, str(terminal))
            if d.get("addr") not in (None, ip):
                self.problem("auditd addr is not the login's address", e, f"{d.get('addr')} != {ip}")

    def _audit_fields(self, e: Mapping[str, Any], d: Mapping[str, Any], kind: str) -> None:
        missing = [k for k in AUDIT_KEYS if k not in d]
        if missing:
            self.problem("auditd fields missing", e, ", ".join(missing))
            return
        self.checked["auditd fields"] += 1
        failed = e["action_result"] in ("FAILURE", "FAILED")
        if d["res"] != ("failed" if failed else "success"):
            self.problem("res does not match the result", e, f"{d['res']} for {e['action_result']}")
        if kind == "service_status_change" and (d["pid"] != 1 or d["auid"] != UNSET):
            self.problem("a service change not by systemd", e, f"pid={d['pid']} auid={d['auid']}")
        if kind == "user_login" and failed and (d["auid"] != UNSET or d["ses"] != UNSET):
            self.problem("a failed login with a login uid", e, f"auid={d['auid']} ses={d['ses']}")

    def _exists(self, host_name: str, host: _Host, name: str) -> bool:
        if name in self._deleted.get(host_name, ()):
            return False
        return name in host.accounts or name in self._created.get(host_name, ())

    def _accounts(
        self, e: Mapping[str, Any], d: Mapping[str, Any], kind: str, host_name: str, host: _Host
    ) -> None:
        user = e["user_id"]
        result = e["action_result"]
        if kind == "user_login" and result == "FAILURE":
            self.checked["failed logins"] += 1
            reason = d.get("reason")
            if reason == "unknown_user":
                if self._exists(host_name, host, user):
                    self.problem("unknown_user for an account that exists", e, f"{user} on {host_name}")
                return
            if not self._exists(host_name, host, user):
                self.problem(
                    "a known-user failure for a name the host lacks", e, f"{reason} {user}@{host_name}"
                )
            if (
                d.get("protocol") in ("ssh", "sftp")
                and not host.password_ssh
                and reason in ("invalid_password", "expired_password")
            ):
                self.problem("a password failure where SSH takes no passwords", e, f"{user}@{host_name}")
            return
        if not self._exists(host_name, host, user):
            self.problem("an account used where it does not exist", e, f"{user} on {host_name}")
        else:
            self.checked["accounts used"] += 1
            account = host.accounts.get(user)
            uid = account.get("uid") if account else None
            # The login uid is the user's own: at login, and on what they do in no session of ours (in a
            # session, the session's auid, checked there).
            own = kind in ("user_login", "user_logout") or "session_id" not in d
            if uid is not None and own and kind != "service_status_change" and d.get("auid") != uid:
                self.problem("auid is not the user's uid", e, f"auid={d.get('auid')} uid={uid}")
        if kind == "user_account_management":
            name = str(d.get("resource"))
            if result == "CREATED":
                self.checked["accounts created"] += 1
                if self._exists(host_name, host, name):
                    self.problem("a new account that already exists", e, f"{name} on {host_name}")
                self._created.setdefault(host_name, set()).add(name)
                self._deleted.get(host_name, set()).discard(name)
            elif result == "DELETED":
                self.checked["accounts deleted"] += 1
                if not self._exists(host_name, host, name):
                    self.problem("an account deleted that does not exist", e, f"{name} on {host_name}")
                self._created.get(host_name, set()).discard(name)
                self._deleted.setdefault(host_name, set()).add(name)
            elif not self._exists(host_name, host, name):
                self.problem("an account changed that does not exist", e, f"{name} on {host_name}")

    def _sudo(self, e: Mapping[str, Any], d: Mapping[str, Any], host_name: str, host: _Host) -> None:
        user = e["user_id"]
        account = host.accounts.get(user)
        allowed = account is not None and (
            account.get("sudo") or host.admin_group in account.get("groups", ()) or account.get("uid") == 0
        )
        self.checked["sudo"] += 1
        if e["action_result"] == "SUCCESS" and not allowed:
            self.problem("sudo by an account not allowed to", e, f"{user} on {host_name}")
        if e["action_result"] != "SUCCESS" and allowed:
            self.problem("sudo refused to an account allowed to", e, f"{user} on {host_name}")
        command = str(d.get("command", ""))
        words = shlex.split(command) if command else []
        effect: tuple[str, str, str] | None = None
        if words[:2] == ["systemctl", "restart"] and len(words) == 3:
            if words[2] not in host.services:
                self.problem("a restart of a service the host does not run", e, f"{words[2]} on {host_name}")
            effect = ("service_status_change", "STARTED", words[2])
            expected = [("service_status_change", "STOPPED", words[2]), effect]
        elif words[:1] == ["useradd"]:
            expected = [("user_account_management", "CREATED", words[-1])]
        elif words[:1] == ["userdel"]:
            expected = [("user_account_management", "DELETED", words[-1])]
        else:
            expected = []
        if expected and e["action_result"] == "SUCCESS":
            self.checked["commands with effects"] += 1
            session = self._sessions.get(str(d.get("session_id")))
            if session is None:
                self.problem("a command whose effect no event can follow", e, command)
            else:
                session.expected.extend(expected)

    def _package(
        self, e: Mapping[str, Any], d: Mapping[str, Any], kind: str, host_name: str, host: _Host
    ) -> None:
        package = str(d.get("package"))
        self.checked["packages"] += 1
        if kind == "package_install" and package not in host.versions:
            self.problem("a package the release does not ship", e, f"{package} on {host_name}")
        if (
            kind == "package_remove"
            and package not in host.packages
            and (host_name, package) not in self._versions
        ):
            self.problem("a package removed that is not installed", e, f"{package} on {host_name}")
        version = d.get("version")
        if version is None:
            return
        if package in host.versions and version != host.versions[package]:
            self.problem("a version the release does not ship", e, f"{package} {version} on {host_name}")
        seen = self._versions.setdefault((host_name, str(package)), str(version))
        if seen != version:
            self.problem("one package at two versions on a host", e, f"{package} {seen} and {version}")

    def _ses(self, e: Mapping[str, Any], d: Mapping[str, Any], host_name: str) -> None:
        """auditd numbers each login session of a host once: a ses belongs to one session."""
        ses = d.get("ses")
        if not isinstance(ses, int) or ses == UNSET:
            return
        owner = str(d.get("session_id") or e["event_id"])
        seen = self._ses_owner.setdefault((host_name, ses), owner)
        if seen != owner:
            self.problem("one ses for two sessions", e, f"ses {ses} on {host_name}")

    def _session(self, e: Mapping[str, Any], d: Mapping[str, Any], kind: str, host_name: str) -> None:
        sid = d.get("session_id")
        if not isinstance(sid, str):
            return
        self.checked["session events"] += 1
        s = self._sessions.get(sid)
        if s is None:
            s = self._sessions[sid] = _Session(host_name, e["user_id"], d.get("ip_address"))
        if (s.host, s.user, s.ip) != (host_name, e["user_id"], d.get("ip_address")):
            self.problem(
                "a session changing host, user or address",
                e,
                f"{s.user}@{s.host} from {s.ip} then {e['user_id']}@{host_name} from {d.get('ip_address')}",
            )
        if kind == "user_login" and e["action_result"] == "SUCCESS":
            s.protocol, s.terminal, s.ses, s.auid = (
                d.get("protocol"),
                _bare(d.get("terminal")),
                d.get("ses"),
                d.get("auid"),
            )
            return
        if kind == "service_status_change" or s.ses is None:
            self._effect(s, e, d, kind)
            return
        terminal = d.get("terminal")
        if terminal is not None and _bare(terminal) != s.terminal:
            self.problem("a session changing terminal", e, f"{s.terminal} then {terminal}")
        if "tty" in d and d["tty"] != s.terminal:
            self.problem("a session's tty is not its terminal", e, f"{d['tty']} in {s.terminal}")
        if s.protocol in ("ssh", "sftp") and TTY.fullmatch(str(d.get("tty", terminal))):
            self.problem("an ssh session on a local tty", e, str(d.get("tty", terminal)))
        if d.get("ses") not in (None, s.ses) or d.get("auid") not in (None, s.auid):
            self.problem("a session changing ses or auid", e, f"ses {s.ses} then {d.get('ses')}")
        self._effect(s, e, d, kind)
        if kind == "user_logout":
            for owed in s.expected:
                self.problem("a command's effect that never followed", e, " ".join(owed))
            del self._sessions[sid]

    def _effect(self, s: _Session, e: Mapping[str, Any], d: Mapping[str, Any], kind: str) -> None:
        """Effects owed by the session's commands must come in order: each event either is the next one
        owed or owes nothing (a restart's stop and start are not split by other work)."""
        if not s.expected:
            return
        got = (kind, e["action_result"], str(d.get("resource")))
        if got == s.expected[0]:
            s.expected.pop(0)
            self.checked["effects followed"] += 1
        elif kind in ("service_status_change", "user_account_management"):
            self.problem(
                "a command followed by another effect", e, f"{' '.join(s.expected[0])} then {' '.join(got)}"
            )
