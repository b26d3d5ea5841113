"""Leases on an object store (S3, Azure Blob Storage): pipeline/lease.py's flock leases, made of objects.

An object store has no locks, but it has an atomic exclusive create: a PUT with
`If-None-Match: *` succeeds for one writer and fails for every other (AWS S3, MinIO, R2, Azure
Blob Storage; GCS `ifGenerationMatch=0` is the same primitive), and a PUT with
`If-Match: <etag>` replaces an object only if nobody replaced it since. `obstore` (Python
bindings of the Rust `object_store` crate, the one delta-rs commits with) exposes both
(`mode="create"`, `mode={"e_tag": ...}`). Objects under DIR/_leases/:

- `maintenance.shared/<holder>`: a writer's shared lease (a run, from before it opens the
  tables until its report is written). The writer creates it, then looks for the exclusive
  lease; if a live one exists it deletes its own and waits.
- `maintenance.exclusive`: `subject erase` / `maintain`. The taker creates it, then lists the
  shared leases; if a live one exists it deletes its own and is refused.
  Two-phase on both sides: each writes before it looks, and S3 and Azure are strongly consistent
  (read-after-write and list), so of two that start together at least one sees the other.
- `commit`: a run's commit phase, exclusive (a replacing run that meets a live one fails,
  an appending run waits).

Expiry instead of the kernel's release on death: every holder renews its object every TTL/4
(a conditional PUT on its own etag). An object not modified for longer than the TTL (the longer
of the taker's and the one the holder wrote into it; the store's clock against the store's
clock: the taker's own fresh object) belongs to a dead holder: a shared one is deleted by the
next exclusive taker, an exclusive one is taken over by a conditional PUT on its etag (so of
two takers one wins). A holder that could not renew for TTL/2 (stopped, cut off) has lost its
lease: `check()` fails before each commit and each vacuum, so a frozen process that wakes up
stops instead of acting without its lease. TTL: 60 s, or TELEMETRY_SANITIZER_LEASE_SECONDS.
A run killed while it holds the commit lease blocks a replacing re-run for at most the TTL
(it exits 4 and says so).

Before a lease is taken the store is checked to honour conditional creates (a probe object is
created twice: the second must fail); a store that ignores them is refused, since delta-rs's
commits rely on the same primitive.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obstore.store import RetryConfig

TTL_ENV = "TELEMETRY_SANITIZER_LEASE_SECONDS"
DEFAULT_TTL = 60.0
PREFIX = "_leases"
EXCLUSIVE = f"{PREFIX}/maintenance.exclusive"
SHARED = f"{PREFIX}/maintenance.shared/"
COMMIT = f"{PREFIX}/commit"
POLL_SECONDS = 1.0


class LeaseError(RuntimeError):
    """The store cannot hold a lease (unreachable, no conditional writes): one line."""


class LeaseLost(RuntimeError):
    """This process could not renew its lease in time: it must not go on."""


def ttl() -> float:
    try:
        value = float(os.environ.get(TTL_ENV, DEFAULT_TTL))
    except ValueError:
        raise LeaseError(f"{TTL_ENV}={os.environ.get(TTL_ENV)!r}: expected a number of seconds") from None
    if value < 2:
        raise LeaseError(f"{TTL_ENV}={value:g}: at least 2 seconds")
    return value


# The probe that opens every lease is the first contact with the store: a store that cannot be
# reached is reported after a few seconds, not after obstore's default 10 retries over up to
# 3 minutes (20 s for a closed port), while a progress line has started to tick.
PROBE_RETRIES: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=10)}


@functools.lru_cache(maxsize=8)
def open_store(location: str, probe: bool = False):
    """An obstore store rooted at the location (S3 or Azure; credentials and endpoint from the
    environment: AWS_* or AZURE_*, as delta-rs reads them); with `probe`, one that gives up
    sooner (PROBE_RETRIES)."""
    from pipeline.location import AZURE_SCHEMES, scheme

    retry = PROBE_RETRIES if probe else None
    if scheme(location) in AZURE_SCHEMES:
        from obstore.store import AzureStore

        return AzureStore.from_url(location, retry_config=retry)  # conditional puts are native on Azure
    from obstore.store import S3Store

    return S3Store.from_url(location, config={"conditional_put": "etag"}, retry_config=retry)


def _errors():
    from obstore import exceptions

    return exceptions


def _head(store, key: str) -> Any:
    import obstore

    try:
        return obstore.head(store, key)
    except (_errors().NotFoundError, FileNotFoundError):  # obstore raises the built-in one
        return None


def _age(now: datetime, meta: Any) -> float:
    return (now - meta["last_modified"]).total_seconds()


def _dead(store, meta: Any, now: datetime, own_ttl: float) -> bool:
    """Whether a lease object belongs to a dead holder: not renewed for longer than the TTL, the
    longer of this process's and the one its holder wrote into it (a holder renews by its own)."""
    import obstore

    age = _age(now, meta)
    if age <= own_ttl:
        return False
    try:
        declared = float(json.loads(bytes(obstore.get(store, meta["path"]).bytes()))["ttl_seconds"])
    except (_errors().NotFoundError, FileNotFoundError):
        return True  # gone meanwhile
    except (ValueError, KeyError, TypeError):
        declared = own_ttl  # not one of ours: judged by this process's TTL
    return age > max(own_ttl, declared)


def server_now(store, location: str) -> datetime:
    """The store's clock, read from a probe object created twice with If-None-Match: * (the
    second create must fail, or the store does not honour conditional writes: refused).
    Callers pass `open_store(location, probe=True)`."""
    import obstore

    errors = _errors()
    key = f"{PREFIX}/probe-{uuid.uuid4().hex}"
    try:
        obstore.put(store, key, b"probe", mode="create")
        try:
            obstore.put(store, key, b"probe", mode="create")
        except errors.AlreadyExistsError:
            pass
        else:
            raise LeaseError(f"{location}: the store does not honour conditional writes (If-None-Match: *); "
                             "leases and concurrent Delta commits would not be safe there, so nothing is written")
        meta = _head(store, key)
        obstore.delete(store, key)
    except (errors.BaseError, OSError) as exc:
        raise LeaseError(f"{location}: cannot use the store: {_one_line(exc)}") from None
    if meta is None:
        raise LeaseError(f"{location}: an object just written cannot be read back (not a consistent store)")
    return meta["last_modified"]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


_held: list[Lease] = []
_held_lock = threading.Lock()


class Lease:
    """One lease object this process holds, renewed by a daemon thread until `release()`."""

    def __init__(self, store, key: str, what: str) -> None:
        self.store = store
        self.key = key
        self.ttl = ttl()
        self.body = json.dumps({"holder": uuid.uuid4().hex, "what": what, "host": socket.gethostname(),
                                "pid": os.getpid(), "ttl_seconds": self.ttl}).encode()
        self.etag: str | None = None
        self.renewed = time.monotonic()
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self) -> bool:
        """Create the object if absent; False when it exists."""
        import obstore

        try:
            self.etag = obstore.put(self.store, self.key, self.body, mode="create")["e_tag"]
        except _errors().AlreadyExistsError:
            return False
        self.renewed = time.monotonic()
        return True

    def take_over(self, etag: str) -> bool:
        """Replace a dead holder's object; False when another process replaced it first."""
        import obstore

        errors = _errors()
        try:
            self.etag = obstore.put(self.store, self.key, self.body, mode={"e_tag": etag})["e_tag"]
        except (errors.PreconditionError, errors.NotFoundError, FileNotFoundError):
            return False
        self.renewed = time.monotonic()
        return True

    def written_at(self) -> datetime:
        meta = _head(self.store, self.key)
        if meta is None:
            raise LeaseLost(f"lease {self.key} vanished right after it was written")
        return meta["last_modified"]

    def start(self) -> Lease:
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._thread.start()
        with _held_lock:
            _held.append(self)
        return self

    def _renew(self) -> None:
        import obstore

        errors = _errors()
        while not self._stop.wait(self.ttl / 4):
            try:
                self.etag = obstore.put(self.store, self.key, self.body, mode={"e_tag": self.etag})["e_tag"]
                self.renewed = time.monotonic()
            except (errors.PreconditionError, errors.NotFoundError, FileNotFoundError):
                self.lost = "another process replaced or removed it"
                return
            except (errors.BaseError, OSError):
                continue  # transient: `alive` turns false once renewals have failed for TTL/2

    def alive(self) -> bool:
        return self.lost is None and time.monotonic() - self.renewed < self.ttl / 2

    def check(self) -> None:
        if not self.alive():
            why = self.lost or f"not renewed for {time.monotonic() - self.renewed:.0f} s (TTL {self.ttl:g} s)"
            raise LeaseLost(f"lost its lease {self.key} ({why}); stopped before changing anything more: "
                            "run it again")

    def release(self) -> None:
        import obstore

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _held_lock:
            if self in _held:
                _held.remove(self)
        try:
            meta = _head(self.store, self.key)
            if meta is not None and meta.get("e_tag") == self.etag:
                obstore.delete(self.store, self.key)
        except (_errors().BaseError, OSError):
            pass  # it expires


def check() -> None:
    """Raise LeaseLost if a lease this process holds on an object store could not be renewed in
    time; called before each commit and each vacuum."""
    with _held_lock:
        leases = list(_held)
    for lease in leases:
        lease.check()


def exclusive(location: str, key: str, what: str, wait: bool, on_wait: Callable[[], None] | None,
              busy: Callable[[], Exception], shared: str | None = None) -> Lease:
    """Take the exclusive lease `key`: create it, or take over a dead holder's. With `shared`,
    then refuse (release and raise `busy()`) while a live shared lease exists; dead ones are
    deleted. Without `wait` a live holder raises `busy()` at once."""
    import obstore

    store = open_store(location)
    announced = False
    while True:
        now = server_now(open_store(location, probe=True), location)
        lease = Lease(store, key, what)
        got = lease.create()
        if not got:
            meta = _head(store, key)
            if meta is None:
                continue  # released meanwhile: try again
            if _dead(store, meta, now, lease.ttl):
                got = lease.take_over(meta["e_tag"])
        if got:
            break
        if not wait:
            raise busy()
        if on_wait is not None and not announced:
            on_wait()
            announced = True
        time.sleep(POLL_SECONDS)
    if shared is not None:
        try:
            mine = lease.written_at()
            live = []
            for batch in obstore.list(store, shared):
                for meta in batch:
                    if _dead(store, meta, mine, lease.ttl):
                        obstore.delete(store, meta["path"])  # a dead writer's
                    else:
                        live.append(meta["path"])
        except BaseException:
            lease.release()
            raise
        if live:
            lease.release()
            raise busy()
    return lease.start()


def shared(location: str, what: str, on_wait: Callable[[], None] | None) -> Lease:
    """Take a shared lease under SHARED: wait while a live exclusive lease exists."""
    store = open_store(location)
    server_now(open_store(location, probe=True), location)
    announced = False
    while True:
        lease = Lease(store, f"{SHARED}{uuid.uuid4().hex}", what)
        if not lease.create():
            raise LeaseError(f"{location}: lease {lease.key} exists already (a random name)")
        try:
            mine = lease.written_at()
            meta = _head(store, EXCLUSIVE)
        except BaseException:
            lease.release()
            raise
        if meta is None or _dead(store, meta, mine, lease.ttl):
            return lease.start()
        lease.release()
        if on_wait is not None and not announced:
            on_wait()
            announced = True
        time.sleep(POLL_SECONDS)


def exclusive_held(location: str) -> bool:
    """Whether a live exclusive lease exists, by this machine's clock (the per-file check of a
    worker: it has no lease object of its own to read the store's clock from)."""
    store = open_store(location)
    meta = _head(store, EXCLUSIVE)
    return meta is not None and not _dead(store, meta, datetime.now(UTC), ttl())
