"""CPU seconds per process group from /proc (utime + stime), for per-cell deltas.

A group is a root PID plus, optionally, all its descendants (gateway workers, Triton's
python-backend stubs). Reading another user's /proc/<pid>/stat is allowed, so a shared
Redis can be measured too. Processes that exit between two snapshots are simply missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Group:
    name: str
    pids: tuple[int, ...]       # roots
    descendants: bool = False   # include every descendant of the roots
    only_descendants: bool = False


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds) of one process, or None when it is gone."""
    return _read(PROC / str(pid) / "stat")


def thread_seconds(pid: int, tid: int) -> float | None:
    """CPU seconds of one thread of `pid` (its main thread: `tid` = `pid`), None when gone."""
    st = _read(PROC / str(pid) / "task" / str(tid) / "stat")
    return None if st is None else st[1]


def _fields(path: Path) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of a /proc stat file, or None when it is gone."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()


def _read(path: Path) -> tuple[int, float] | None:
    f = _fields(path)
    if f is None:
        return None
    rest = f[1]
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK


def thread_times(pid: int) -> dict[int, tuple[str, float, float]]:
    """Each thread of `pid`: (name, user seconds, system seconds) so far (threads that end
    meanwhile are left out)."""
    out: dict[int, tuple[str, float, float]] = {}
    for task in (PROC / str(pid) / "task").iterdir():
        f = _fields(task / "stat")
        if f is not None:
            name, rest = f
            out[int(task.name)] = (name, int(rest[11]) / _TICK, int(rest[12]) / _TICK)
    return out


def _table() -> dict[int, tuple[int, float]]:
    out: dict[int, tuple[int, float]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                out[int(entry.name)] = st
    return out


def _descendants(roots: tuple[int, ...], table: dict[int, tuple[int, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def snapshot(groups: list[Group]) -> dict[str, float]:
    """CPU seconds used so far by each group."""
    table = _table()
    out: dict[str, float] = {}
    for g in groups:
        pids = set() if g.only_descendants else set(g.pids)
        if g.descendants or g.only_descendants:
            pids |= _descendants(g.pids, table)
        out[g.name] = sum(table[p][1] for p in pids if p in table)
    return out


def find_pids(comm: str, arg_contains: str = "") -> tuple[int, ...]:
    """PIDs whose command name is `comm` and whose command line contains `arg_contains`."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != comm:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if arg_contains in cmdline:
            found.append(int(entry.name))
    return tuple(found)


def affinity(pid: int) -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:
        return None
