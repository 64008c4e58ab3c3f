"""Extract chosen members of an untrusted tar archive without letting it write anywhere else.

Every member name is checked (no absolute paths, no `..`, no links or device files) and the archive is
refused at the first bad one. Members are streamed to `<dest>.part` and renamed, and sizes in the
header are not trusted: a member may not exceed a byte cap, and the bytes copied must match its header.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from avbias.errors import DataError
from avbias.io import atomic_path

CHUNK = 1 << 20


class UnsafeArchiveError(DataError):
    """The archive tries to write outside its folder or holds links: nothing more is read from it."""


NEXT_STEP = "refusing this archive: it is not a clean Kinetics tarball. Delete it, check the mirror (base_url), re-run"


def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; {NEXT_STEP}")
    if ".." in path.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the archive (..); {NEXT_STEP}")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} is a link (to {member.linkname!r}); {NEXT_STEP}"
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is not a regular file or folder; {NEXT_STEP}")


def extract_selected(
    archive: Path, dest_root: Path, select: Callable[[str], str | None], max_member_bytes: int
) -> list[Path]:
    """Extract the regular files whose name `select` maps to a path relative to dest_root.

    Returns the files written. Raises UnsafeArchiveError on a bad member, DataError on a truncated
    archive or an oversized member; files written before that are complete and stay.
    """
    root = dest_root.resolve()
    written: list[Path] = []
    try:
        with tarfile.open(archive, mode="r|*") as tar:       # streaming: one pass, constant memory
            for member in tar:
                check_member(archive, member)
                if not member.isfile():
                    continue
                relative = select(member.name)
                if relative is None:
                    continue
                target = (root / relative).resolve()
                if not target.is_relative_to(root):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} maps outside {root}")
                source = tar.extractfile(member)
                assert source is not None
                copied = 0
                with atomic_path(target) as tmp, open(tmp, "wb") as out:
                    while block := source.read(CHUNK):
                        copied += len(block)
                        if copied > max_member_bytes:
                            raise DataError(
                                f"{archive}: member {member.name!r} exceeds {max_member_bytes} bytes; not extracted"
                            )
                        out.write(block)
                    if copied != member.size:
                        raise DataError(
                            f"{archive}: member {member.name!r} has {copied} bytes, header says {member.size} "
                            "(truncated archive?)"
                        )
                written.append(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"{archive}: cannot read the archive ({type(exc).__name__}: {exc}); delete it and re-run to fetch it again"
        ) from None
    return written
