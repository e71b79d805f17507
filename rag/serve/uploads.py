"""Uploaded files into the served index, through the normal ingest pipeline and writer lock.

A client's file name is data, never a path: it is reduced to one component of letters, digits,
``.``, ``-``, ``_`` and spaces (``../../etc/passwd.txt`` becomes ``passwd.txt``), and the server writes
the bytes under that name in a directory of its own (one per index, so that a file uploaded again
replaces its document). The bytes are first written under a generated name and renamed into place
just before the ingest; a file the ingest skips, or a failed ingest, puts the previous file back.
The index is only ever changed by the ingest's one atomic commit, so an upload that is refused,
fails or is killed leaves it as it was.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ingest import ingest
from ingest.loaders.files import SUPPORTED_SUFFIXES
from rag.serve.errors import ApiError
from rag.serve.state import WarmIndex

log = logging.getLogger(__name__)

# Letters and digits of any script, "_", ".", "-" and spaces; never a separator or control.
_UNSAFE = re.compile(r"[^\w.\- ]+")
_MAX_NAME = 120
_INCOMING = ".incoming-"
_PREVIOUS = ".previous-"


def safe_name(client_name: str | None) -> str:
    """The name an upload is kept and cited under: the last component of what the client sent,
    with every other character replaced; refused when its type cannot be ingested."""
    raw = (client_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", raw).strip(" .")
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    suffix = f".{suffix.lower()}" if suffix else ""
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise ApiError(
            415,
            f"Cannot ingest {client_name!r}: unsupported file type {suffix or '(none)'} "
            f"(supported: {supported}).",
        )
    stem = stem[: _MAX_NAME - len(suffix)].strip(" .") or "upload"
    return stem + suffix


@dataclass
class _Staged:
    name: str
    final: Path
    previous: Path | None = None


class Uploads:
    """The server's upload directory for one index."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.directory.iterdir():
            if leftover.name.startswith((_INCOMING, _PREVIOUS)):
                # Left by a server killed during an upload; the index never depended on them.
                log.info("removing %s, left by an interrupted upload", leftover)
                leftover.unlink(missing_ok=True)

    def source_of(self, name: str) -> str:
        """The index's source of an upload named ``name`` (as :func:`safe_name` gives it)."""
        return str(self.directory / name)

    def add(
        self, index: WarmIndex, files: list[tuple[str, BinaryIO]], workers: int | None
    ) -> dict[str, Any]:
        """Ingest ``files`` (client name, readable bytes) in one commit; the ingest report with
        each file's name and source. Holds the server's write turn."""
        names = [safe_name(client) for client, _ in files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ApiError(400, f"Two uploaded files are both named {dupes[0]!r}; send one.")
        with index.writing():
            staged: list[_Staged] = []
            try:
                for name, (_, content) in zip(names, files, strict=True):
                    staged.append(self._stage(name, content))
                report = ingest(
                    [s.final for s in staged],
                    index.index_dir,
                    index.settings,
                    embedder=index.embedder,
                    tokenizer=index.tokenizer,
                    workers=workers,
                )
            except BaseException:
                for s in staged:
                    self._undo(s)
                raise
            skipped = {sk.path for sk in report.files_skipped}
            for s in staged:
                if str(s.final) in skipped:
                    self._undo(s)
                elif s.previous is not None:
                    s.previous.unlink(missing_ok=True)
        data = report.model_dump(mode="json")
        data["documents"] = [
            {"name": s.name, "source": str(s.final), "skipped": str(s.final) in skipped}
            for s in staged
        ]
        return data

    def remove(self, source: str) -> None:
        """Delete the kept copy of an upload whose document was deleted (others are left)."""
        path = Path(source)
        if path.parent == self.directory and not path.name.startswith("."):
            path.unlink(missing_ok=True)

    def _stage(self, name: str, data: BinaryIO) -> _Staged:
        incoming = self.directory / f"{_INCOMING}{uuid.uuid4().hex}"
        with open(incoming, "wb") as out:
            shutil.copyfileobj(data, out, 1024 * 1024)
        final = self.directory / name
        staged = _Staged(name, final)
        if final.exists():
            staged.previous = self.directory / f"{_PREVIOUS}{uuid.uuid4().hex}"
            os.replace(final, staged.previous)
        os.replace(incoming, final)
        return staged

    def _undo(self, s: _Staged) -> None:
        if s.previous is not None:
            os.replace(s.previous, s.final)
        else:
            s.final.unlink(missing_ok=True)
