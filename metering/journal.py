"""The local journal: every usage event is appended here before anything else.

A journal is a directory of segment files (JSON lines). Each live process appends to a segment of
its own, held under an exclusive ``flock``; a segment nobody holds belongs to a process that died,
and whoever finds it replays it. Beside each segment, ``<segment>.ckpt`` holds the byte offset up
to which its events are committed to the database; it is advanced only after the commit, so a
crash between the two replays a few events, which the idempotent insert ignores.

An append is one ``write(2)`` of a whole line to a file opened with ``O_APPEND``: once it returns,
the line is in the kernel and survives a kill of the process. Surviving power loss needs fsync:
``fsync="always"`` syncs every append, ``"interval"`` syncs in the background every
``fsync_interval_s`` (losing at most that window), ``"none"`` leaves it to the kernel.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from metering.events import FLAT_FIELDS, UsageEvent, new_event_id

log = logging.getLogger(__name__)

FsyncPolicy = Literal["none", "interval", "always"]
SEGMENT_GLOB = "seg-*.jsonl"
_READ_CHUNK_BYTES = 4 * 1024 * 1024


class JournalError(Exception):
    """The journal cannot be written (full disk, permissions)."""


def encode_event(event: UsageEvent) -> bytes:
    return orjson.dumps(event.flat()) + b"\n"


def decode_event(line: bytes) -> UsageEvent:
    return UsageEvent.from_flat(orjson.loads(line))


def decode_row(line: bytes) -> dict[str, Any]:
    """A journal line as the event's flat row; lines of older versions (fields missing that have
    defaults) are completed, and a line that is not an event raises."""
    row: dict[str, Any] = orjson.loads(line)
    if type(row) is not dict:
        raise TypeError(f"a journal line holds a {type(row).__name__}, not an event")
    if row.keys() != FLAT_FIELDS:
        row = decode_event(line).flat()
    return row


@dataclass(slots=True)
class Segment:
    """A segment file and how far into it the database has committed."""

    path: Path
    offset: int
    fd: int | None = None  # lock holder's descriptor
    pending_events: int = 0  # counted when an orphan is claimed; own segments count elsewhere
    # lines past the checkpoint that are not events, (byte offset, line): for the quarantine
    unreadable: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def checkpoint_path(self) -> Path:
        return self.path.with_name(self.path.name + ".ckpt")

    def pending_bytes(self) -> int:
        try:
            return max(0, self.path.stat().st_size - self.offset)
        except FileNotFoundError:
            return 0

    def read(self, max_events: int, *, final: bool) -> tuple[list[dict[str, Any]], int]:
        """Events (as flat rows) past the checkpoint and the offset after them.

        A trailing line without its newline is a write in progress, or, in a segment whose
        writer died (``final``), a torn write: it is never returned.
        """
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(_READ_CHUNK_BYTES)
        end = data.rfind(b"\n") + 1
        if final and end < len(data) and len(data) < _READ_CHUNK_BYTES:
            log.warning(
                "journal %s: torn last line (%d bytes) ignored; replayed up to the tear",
                self.path.name,
                len(data) - end,
            )
        events: list[dict[str, Any]] = []
        pos = 0
        while pos < end and len(events) < max_events:
            nl = data.index(b"\n", pos)
            line = data[pos:nl]
            pos = nl + 1
            if line.strip():
                try:
                    events.append(decode_row(line))
                except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                    at = self.offset + pos - len(line) - 1
                    log.error(
                        "journal %s: unreadable line at byte %d quarantined", self.path.name, at
                    )
                    self.unreadable.append((at, line))
        return events, self.offset + pos

    def commit(self, offset: int) -> None:
        """Advance the checkpoint; JournalError (naming the journal) if the disk refuses."""
        path = self.checkpoint_path
        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                data = str(offset).encode()
                if os.write(fd, data) != len(data):
                    raise OSError("short write")
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            raise JournalError(
                f"cannot write the checkpoint of journal {self.path}: {exc}"
            ) from exc
        self.offset = offset

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.checkpoint_path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _count_lines(path: Path, offset: int) -> int:
    with path.open("rb") as f:
        f.seek(offset)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def read_checkpoint(path: Path) -> int:
    """The committed offset of segment ``path`` (0 when it has no checkpoint yet)."""
    try:
        return int(path.with_name(path.name + ".ckpt").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def pending_bytes_on_disk(directory: Path) -> int:
    """Bytes of every segment in ``directory`` past its checkpoint: what the database does not
    have yet, read from the files themselves (whoever holds them)."""
    total = 0
    for path in directory.glob(SEGMENT_GLOB):
        try:
            total += max(0, path.stat().st_size - read_checkpoint(path))
        except FileNotFoundError:  # drained and removed meanwhile
            continue
    return total


def _lock(path: Path) -> int | None:
    """A descriptor of ``path`` holding its exclusive ``flock``; None if a live process holds
    it, or the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds an exclusive ``flock`` on ``path``."""
    fd = _lock(path)
    if fd is None:
        return path.exists()  # held, unless it is gone
    os.close(fd)
    return False


def claim_if_orphan(path: Path, offset: int | None = None) -> Segment | None:
    """The segment at ``path``, locked by us, if no live process holds it (its writer died or
    rotated away from it); None if one does, or it is gone. ``offset``: where its checkpoint is
    known to be (else read from the checkpoint file)."""
    fd = _lock(path)
    if fd is None:
        return None
    if offset is None:
        offset = read_checkpoint(path)
    return Segment(path, offset, fd, pending_events=_count_lines(path, offset))


class Journal:
    """This process's segment, plus the orphaned segments of processes that died."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy = "none",
        segment_max_bytes: int = 64 * 1024 * 1024,
        release_on_rotate: bool = False,
    ) -> None:
        """``release_on_rotate``: a rotated-out segment is closed (its lock released) rather than
        kept for this process to drain: the ledger process takes it from there."""
        self.directory = directory
        self.fsync = fsync
        self._release = release_on_rotate
        self._segment_max_bytes = segment_max_bytes
        self.active: Segment | None = None
        self._size = 0
        self._torn = False  # a failed append left bytes that could not be cut off
        self.retired: list[Segment] = []  # ours, rotated out, not yet drained
        self.appended = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._rotate()

    def close(self) -> None:
        if self.active is not None and self.active.fd is not None:
            os.close(self.active.fd)
            self.active.fd = None

    def _rotate(self) -> None:
        path, fd = self._new_segment()
        self._install(path, fd)

    def rotate(self) -> None:
        """Start a fresh segment now (e.g. the active one is drained); JournalError if not."""
        try:
            self._rotate()
        except OSError as exc:
            raise JournalError(f"cannot start a segment in {self.directory}: {exc}") from exc

    @property
    def size(self) -> int:
        """Bytes appended to the active segment."""
        return self._size

    def _new_segment(self) -> tuple[Path, int]:
        """A fresh segment, locked before its name can be seen: another process scanning for
        orphans must never find it unlocked."""
        path = self.directory / f"seg-{new_event_id()}-{os.getpid()}.jsonl"
        hidden = path.with_name("." + path.name)
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, path)
        except OSError:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        return path, fd

    def _install(self, path: Path, fd: int, size: int = 0) -> None:
        old = self.active
        if old is not None and self._release:
            if old.fd is not None:
                os.close(old.fd)
                old.fd = None
        elif old is not None:
            self.retired.append(old)
        self.active = Segment(path, 0, fd)
        self._size = size
        self._torn = False

    def append(self, event: UsageEvent) -> tuple[Path, int]:
        """Write one event durably enough to survive a process kill; JournalError if not.
        Returns the segment it went to and the byte offset just past its line."""
        line = encode_event(event)
        seg = self.active
        if seg is None or seg.fd is None:
            raise JournalError("journal is not open")
        if self._torn:
            raise JournalError(f"journal {seg.path} has a torn tail; waiting for a fresh segment")
        try:
            written = os.write(seg.fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            if self.fsync == "always":
                os.fsync(seg.fd)
        except OSError as exc:
            self._cut_torn_tail(seg)
            raise JournalError(f"cannot append to journal {seg.path}: {exc}") from exc
        self._size += len(line)
        self.appended += 1
        end = self._size
        if self._size >= self._segment_max_bytes:
            self._rotate()
        return seg.path, end

    def _cut_torn_tail(self, seg: Segment) -> None:
        """After a failed append, part of the line may be on disk: cut it off, or the next
        line would be glued to it and both lost. If even that fails, stop appending here
        (``probe`` moves to a fresh segment; readers ignore a torn last line)."""
        assert seg.fd is not None
        try:
            if os.fstat(seg.fd).st_size != self._size:
                os.ftruncate(seg.fd, self._size)
        except OSError:
            self._torn = True

    def truncate_drained(self) -> None:
        """Everything in the active segment is in the database: empty it now rather than at
        rotation, so a drained journal takes no disk. Called on the appending thread (the event
        loop), so no append can land between the check and the truncation. The checkpoint goes
        to 0 first: a crash (or a failed truncate) in between only replays events the database
        already has, which the idempotent insert skips."""
        seg = self.active
        if seg is None or seg.fd is None or self._torn or not self._size:
            return
        if seg.offset != self._size:
            return
        try:
            seg.commit(0)
            os.ftruncate(seg.fd, 0)
        except (OSError, JournalError) as exc:
            log.warning("journal %s: drained segment not emptied: %s", seg.path.name, exc)
            return
        self._size = 0

    def probe(self) -> None:
        """After a failure: start a fresh segment and write a blank line (readers skip it).
        JournalError if the journal is still unwritable."""
        try:
            path, fd = self._new_segment()
        except OSError as exc:
            raise JournalError(f"journal {self.directory} still unwritable: {exc}") from exc
        try:
            if os.write(fd, b"\n") != 1:
                raise OSError("short write")
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise JournalError(f"journal {self.directory} still unwritable: {exc}") from exc
        self._install(path, fd, size=1)

    def sync(self) -> None:
        if self.active is not None and self.active.fd is not None:
            os.fsync(self.active.fd)

    def claim_orphans(self) -> list[Segment]:
        """Segments of dead processes, locked by us until drained."""
        orphans = []
        own = {s.path for s in self._own_segments()}
        for path in sorted(self.directory.glob(SEGMENT_GLOB)):
            if path in own:
                continue
            orphan = claim_if_orphan(path)
            if orphan is not None:
                orphans.append(orphan)
        return orphans

    def _own_segments(self) -> Iterator[Segment]:
        yield from self.retired
        if self.active is not None:
            yield self.active
