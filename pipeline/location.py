"""Where an output lives: a local directory, an S3 location or an Azure Blob Storage location, and
the few file operations the commands need on it, through `pyarrow.fs` (docs/tables.md, Locations).

Which locations are accepted, and why:
- a local path (or a file system mounted at one): leases are `flock` locks (pipeline/lease.py);
- `s3://bucket/prefix`: leases are objects created with a conditional put (`If-None-Match: *`,
  pipeline/store_lease.py, through `obstore`), and delta-rs commits with the same conditional
  put (`aws_conditional_put = etag`, set here); the store is checked to honour it before anything
  is written. Credentials and endpoint come from the environment (AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, ...), read alike by delta-rs, pyarrow and
  obstore, so the three clients see one configuration;
- `abfss://container@account.dfs.core.windows.net/prefix` (or `abfs://`, or `az://container/prefix`
  with AZURE_STORAGE_ACCOUNT_NAME): the same leases and commits, Azure's `If-None-Match: *` /
  `If-Match` being the same primitive (delta-rs commits with it unasked). The file operations go
  through `object_store` too (obstore's fsspec adapter, see `filesystem`), so the three clients
  read one configuration: the AZURE_* variables;
- `gs://` is refused: no GCS emulator installable here serves the conditional creates the
  leases and commits need (docs/tables.md, "Why gs:// stays refused"); fail closed;
- `file://` is refused with a hint to give the path itself.

No operation here renames: a file is one PUT on an object store, and locally one write to a
temporary name replaced into place (a local file system's own atomic rename, never relied on
remotely).
"""

from __future__ import annotations

import functools
import os
import re
from functools import cached_property
from typing import Any

AZURE_SCHEMES = ("abfs", "abfss", "az")
SUPPORTED_SCHEMES = ("s3", *AZURE_SCHEMES)
UNTESTED_SCHEMES = ("gs", "gcs")
AZURE_HOSTS = (".dfs.core.windows.net", ".blob.core.windows.net")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")  # Azure's container naming rules


def scheme(location: str) -> str | None:
    """'s3', 'gs', ... for a URI; None for a local path."""
    head, sep, _ = location.partition("://")
    return head.lower() if sep else None


def refused(option: str, location: str) -> str | None:
    """Why an output location is refused (one line), or None when it is accepted."""
    kind = scheme(location)
    if kind is None:
        return None
    if kind == "s3":
        if not location[len("s3://"):].strip("/"):
            return f"{option} {location}: name a bucket (s3://bucket/prefix)"
        return None
    if kind in AZURE_SCHEMES:
        return _azure_refused(option, location)
    if kind == "file":
        return f"{option} {location}: give the local path itself ({location[len('file://'):]}), not a file:// URI"
    if kind in UNTESTED_SCHEMES:
        return (f"{option} {location}: {kind}:// outputs are not supported: the leases and Delta commits are untested "
                "on GCS (no GCS emulator serves their conditional creates, ifGenerationMatch=0); use a local "
                "directory, s3:// or abfss:// (docs/tables.md, Locations)")
    return (f"{option} {location}: unknown storage scheme {kind}://; use a local directory, s3://bucket/prefix or "
            "abfss://container@account.dfs.core.windows.net/prefix")


def azure_parts(location: str) -> tuple[str | None, str, str]:
    """(account or None, container, prefix) of `abfs[s]://container@account.dfs.core.windows.net/prefix`
    or `abfs[s]|az://container/prefix` (the account then comes from AZURE_STORAGE_ACCOUNT_NAME)."""
    netloc, _, prefix = location.split("://", 1)[1].partition("/")
    account = None
    if "@" in netloc:
        netloc, _, host = netloc.partition("@")
        account = host.split(".", 1)[0] if host.lower().endswith(AZURE_HOSTS) else ""
    return account, netloc, prefix.strip("/")


def _azure_refused(option: str, location: str) -> str | None:
    account, container, _ = azure_parts(location)
    form = "abfss://container@account.dfs.core.windows.net/prefix"
    if account == "":
        return f"{option} {location}: expected {form} (an account host ending in .dfs.core.windows.net)"
    if not _CONTAINER.fullmatch(container):
        return (f"{option} {location}: {container!r} is not a container name (3-63 of a-z, 0-9 and single "
                f"hyphens); expected {form}")
    if account is None and not os.environ.get("AZURE_STORAGE_ACCOUNT_NAME"):
        return f"{option} {location}: name the storage account: {form}, or set AZURE_STORAGE_ACCOUNT_NAME"
    return None


class _ByteWrites:
    """A file of obstore's whose `write` also takes pyarrow's buffers: obstore accepts only buffers
    of unsigned bytes, and pyarrow hands its file objects signed ones."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def write(self, data: Any) -> int:
        return self._raw.write(memoryview(data).cast("B"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@functools.lru_cache(maxsize=8)
def _azure_fs(account: str | None, environment: tuple[tuple[str, str], ...]):
    """`environment`: the AZURE_* variables the store was configured from (a new one when they change)."""
    import pyarrow.fs as pafs
    from obstore.fsspec import FsspecStore
    from pyarrow import PythonFile

    class Handler(pafs.FSSpecHandler):
        def open_output_stream(self, path, metadata):
            return PythonFile(_ByteWrites(self.fs.open(path, mode="wb")), mode="w")

    store = FsspecStore("abfs", account_name=account) if account else FsspecStore("abfs")
    return pafs.PyFileSystem(Handler(store))


def filesystem(uri: str):
    """pyarrow file system and path of a URI. On Azure it is `object_store` (obstore's fsspec
    adapter under pyarrow's FSSpecHandler), the client delta-rs and the leases use, configured from
    the same AZURE_* variables: AZURE_STORAGE_ACCOUNT_NAME (unless the URI names the account),
    AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/
    AZURE_TENANT_ID (else a managed identity), and AZURE_STORAGE_USE_EMULATOR=true with
    AZURITE_BLOB_STORAGE_URL for the Azurite emulator. pyarrow's own AzureFileSystem is not used:
    it aborts the process (an uncaught C++ TransportException) when the server closes an idle
    connection, which Azurite does after 5 s (docs/tables.md, Locations)."""
    if scheme(uri) not in AZURE_SCHEMES:
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(uri)
    account, container, prefix = azure_parts(uri)
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AZURE_", "AZURITE_"))))
    return _azure_fs(account, environment), "/".join(p for p in (container, prefix) if p)


def storage_options(location: str) -> dict[str, str] | None:
    """delta-rs storage options: on S3, commits by conditional put (If-None-Match: *), whatever the
    environment says (on Azure delta-rs does so unasked); credentials and endpoint come from the
    environment."""
    if scheme(location) == "s3":
        return {"aws_conditional_put": "etag"}
    return None


class Location:
    """An output location as a pyarrow file system and root; paths are relative to the root,
    '/'-separated."""

    def __init__(self, location: str) -> None:
        self.remote = scheme(location) is not None
        self.location = location.rstrip("/") if self.remote else location  # as given, for messages

    @cached_property
    def _fs(self):
        import pyarrow.fs as pafs

        if not self.remote:
            return pafs.LocalFileSystem(), os.path.abspath(self.location)
        fs, root = filesystem(self.location)
        return fs, root.rstrip("/")

    @property
    def fs(self):
        return self._fs[0]

    @property
    def storage_options(self) -> dict[str, str] | None:
        return storage_options(self.location)

    def path(self, *parts: str) -> str:
        """File-system path (for `fs`) of a path relative to the location."""
        return "/".join([self._fs[1], *(p.strip("/") for p in parts if p)])

    def uri(self, *parts: str) -> str:
        """What delta-rs and the user see: the location joined with `parts`."""
        if self.remote:
            return "/".join([self.location, *(p.strip("/") for p in parts if p)])
        return os.path.join(self.location, *parts)

    def __str__(self) -> str:
        return self.location

    def is_dir(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.Directory:
            return True
        if self.remote and info.type == pafs.FileType.NotFound:  # a prefix with objects under it
            return bool(self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True)))
        return False

    def exists(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(*parts)).type == pafs.FileType.File

    def existing(self, relative: list[str]) -> list[str]:
        """Those of `relative` that are files (one listing call for many)."""
        import pyarrow.fs as pafs

        if not relative:
            return []
        infos = self.fs.get_file_info([self.path(p) for p in relative])
        return [p for p, info in zip(relative, infos, strict=True) if info.type == pafs.FileType.File]

    def files(self, *parts: str) -> list[str]:
        """Every file below a directory, as paths relative to the location, sorted."""
        import pyarrow.fs as pafs

        base = self.path(*parts)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        root = self._fs[1] + "/"
        return sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File)

    def dirs(self, *parts: str) -> list[str]:
        """Names of the directories (prefixes) right under a directory."""
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def read(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as fh:
            return fh.read()

    def write(self, data: bytes, *parts: str) -> None:
        """The file appears whole: one PUT on an object store; locally a temporary name replaced into place."""
        target = self.path(*parts)
        if self.remote:
            with self.fs.open_output_stream(target) as fh:
                fh.write(data)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.path(relative))
        except FileNotFoundError:
            pass
