"""Where an output lives: a local directory or an S3 location, and the few file operations the
commands need on it, through `pyarrow.fs` (docs/tables.md, Locations).

Which locations are accepted, and why:
- a local path (or a file system mounted at one): leases are `flock` locks (pipeline/lease.py);
- `s3://bucket/prefix`: leases are objects created with a conditional put (`If-None-Match: *`,
  pipeline/store_lease.py, through `obstore`), and delta-rs commits with the same conditional
  put (`aws_conditional_put = etag`, set here); the store is checked to honour it before anything
  is written. Credentials and endpoint come from the environment (AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, ...), read alike by delta-rs, pyarrow and
  obstore, so the three clients see one configuration;
- `gs://` and `abfs://` are refused: the clients implement the same conditional create
  (`ifGenerationMatch=0`, `If-None-Match: *`), but no emulator of either store is installable
  here, so the lease and erasure paths could not be tested on them (fail closed);
- `file://` is refused with a hint to give the path itself.

No operation here renames: a file is one PUT on S3, and locally one write to a temporary name
replaced into place (a local file system's own atomic rename, never relied on remotely).
"""

from __future__ import annotations

import os
from functools import cached_property

SUPPORTED_SCHEMES = ("s3",)
UNTESTED_SCHEMES = ("gs", "gcs", "abfs", "abfss", "az", "azure")


def scheme(location: str) -> str | None:
    """'s3', 'gs', ... for a URI; None for a local path."""
    head, sep, _ = location.partition("://")
    return head.lower() if sep else None


def refused(option: str, location: str) -> str | None:
    """Why an output location is refused (one line), or None when it is accepted."""
    kind = scheme(location)
    if kind is None or kind in SUPPORTED_SCHEMES:
        if kind == "s3" and not location[len("s3://"):].strip("/"):
            return f"{option} {location}: name a bucket (s3://bucket/prefix)"
        return None
    if kind == "file":
        return f"{option} {location}: give the local path itself ({location[len('file://'):]}), not a file:// URI"
    if kind in UNTESTED_SCHEMES:
        return (f"{option} {location}: {kind}:// outputs are not supported yet: the lease and erasure paths are "
                "tested only on S3 (no emulator of this store is available to test them); use a local directory "
                "or s3:// (docs/tables.md, Locations)")
    return f"{option} {location}: unknown storage scheme {kind}://; use a local directory or s3://bucket/prefix"


def storage_options(location: str) -> dict[str, str] | None:
    """delta-rs storage options: on S3, commits by conditional put (If-None-Match: *), whatever the
    environment says; credentials and endpoint come from the environment."""
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
        fs, root = pafs.FileSystem.from_uri(self.location)
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
        """The file appears whole: one PUT on S3; locally a temporary name replaced into place."""
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
