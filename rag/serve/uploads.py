"""Uploaded files into the served index, through the normal ingest pipeline and writer lock.

A client's file name is data, never a path: it is reduced to one component of letters, digits,
``.``, ``-``, ``_`` and spaces (``../../etc/passwd.txt`` becomes ``passwd.txt``) of at most
:data:`MAX_NAME_BYTES` bytes in UTF-8, and the server writes the bytes under that name in a
directory of its own (one per index, so that a file uploaded again replaces its document). Two
different client names can reduce to one kept name (``a?b.pdf`` and ``a!b.pdf``; ``Report.PDF`` and
``Report.pdf``): the client name each kept file came from is recorded (``.names.json``), and an
upload that would replace another client name's document is refused with a 409 instead of
silently taking its place. A response says which documents an upload replaced.

The bytes are first written under a generated name and renamed into place just before the ingest;
a file the ingest skips, or a failed ingest, puts the previous file back, and every staged file
is removed on every failure. Before anything is renamed, a journal (``.journal-*.json``) lists
each kept name with the copy of the file it replaces; a server killed during an upload finds the
journal at its next start and makes the directory agree with the index by content hash: a file
whose new content the index holds stays, one whose old content it holds is put back, and a new
file the index never took is removed. The index is only ever changed by the ingest's one atomic
commit, so an upload that is refused, fails or is killed leaves it as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ingest import ingest
from ingest.loaders.files import SUPPORTED_SUFFIXES
from rag.errors import NothingIngested
from rag.serve.errors import ApiError
from rag.serve.state import WarmIndex

log = logging.getLogger(__name__)

# Letters and digits of any script, "_", ".", "-" and spaces; never a separator or control.
_UNSAFE = re.compile(r"[^\w.\- ]+")
# File systems limit a name to 255 bytes (not characters): 85 CJK characters are 255 bytes.
MAX_NAME_BYTES = 240
_INCOMING = ".incoming-"
_PREVIOUS = ".previous-"
_JOURNAL = ".journal-"
_NAMES = ".names.json"


def safe_name(client_name: str | None) -> str:
    """The name an upload is kept and cited under: the last component of what the client sent,
    with every other character replaced; refused when its type cannot be ingested."""
    raw = _client_base(client_name)
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
    room = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:room].decode(errors="ignore").strip(" .") or "upload"
    return stem + suffix


def _client_base(client_name: str | None) -> str:
    return (client_name or "").replace("\\", "/").rsplit("/", 1)[-1]


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

    def source_of(self, name: str) -> str:
        """The index's source of an upload named ``name`` (as :func:`safe_name` gives it)."""
        return str(self.directory / name)

    def reconcile(self, indexed: Mapping[str, str]) -> None:
        """Make the directory agree with the index after a server was killed during an upload.

        ``indexed`` maps each source of the index to its content hash. Runs at start-up, before
        any upload; only files an unfinished journal names are touched, so files the user put in
        the directory are never removed."""
        for journal in sorted(self.directory.glob(f"{_JOURNAL}*.json")):
            try:
                entries = json.loads(journal.read_text("utf-8"))
            except (OSError, ValueError):
                log.warning("unreadable upload journal %s; removing it", journal)
                entries = []
            recorded = self._names()
            for entry in entries:
                previous = self.directory / entry["previous"] if entry.get("previous") else None
                final = self.directory / entry["name"]
                self._settle(final, previous, indexed)
                if final.exists() and entry.get("client"):
                    recorded[final.name] = entry["client"]
            _write_json(self.directory / _NAMES, recorded)
            journal.unlink(missing_ok=True)
        for leftover in self.directory.iterdir():
            if leftover.name.startswith((_INCOMING, _PREVIOUS)):
                # Bytes of an upload that never reached the index, and no journal names them.
                log.info("removing %s, left by an interrupted upload", leftover)
                leftover.unlink(missing_ok=True)

    def add(
        self, index: WarmIndex, files: list[tuple[str, BinaryIO]], workers: int | None
    ) -> dict[str, Any]:
        """Ingest ``files`` (client name, readable bytes) in one commit; the ingest report with
        each file's name, source and whether it replaced a document. Holds the server's write
        turn."""
        names = [safe_name(client) for client, _ in files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ApiError(400, f"Two uploaded files are both named {dupes[0]!r}; send one.")
        clients = [_client_base(client) for client, _ in files]
        with index.writing():
            recorded = self._names()
            for name, client in zip(names, clients, strict=True):
                self._check_collision(name, client, recorded)
            staged: list[_Staged] = []
            plan: list[_Staged] = []
            journal = self.directory / f"{_JOURNAL}{uuid.uuid4().hex}.json"
            try:
                incoming = [self._receive(content) for _, content in files]
                plan = [
                    _Staged(name, self.directory / name, self._previous_slot(name))
                    for name in names
                ]
                _write_json(
                    journal, [_journal_entry(s, c) for s, c in zip(plan, clients, strict=True)]
                )
                for s, path in zip(plan, incoming, strict=True):
                    if s.previous is not None:
                        os.replace(s.final, s.previous)
                    os.replace(path, s.final)
                    staged.append(s)
                report = ingest(
                    [s.final for s in staged],
                    index.index_dir,
                    index.settings,
                    embedder=index.embedder,
                    tokenizer=index.tokenizer,
                    workers=workers,
                )
            except BaseException as exc:
                for s in staged:
                    self._undo(s)
                self._drop_incoming()
                journal.unlink(missing_ok=True)
                if isinstance(exc, NothingIngested):
                    raise self._nothing_ingested(exc, plan) from exc
                raise
            skipped = {sk.path for sk in report.files_skipped}
            for s, client in zip(staged, clients, strict=True):
                if str(s.final) in skipped:
                    self._undo(s)
                else:
                    recorded[s.name] = client
                    if s.previous is not None:
                        s.previous.unlink(missing_ok=True)
            _write_json(self.directory / _NAMES, recorded)
            journal.unlink(missing_ok=True)
        data = report.model_dump(mode="json")
        data["documents"] = [
            {
                "name": s.name,
                "source": str(s.final),
                "skipped": str(s.final) in skipped,
                "replaced": s.previous is not None and str(s.final) not in skipped,
            }
            for s in staged
        ]
        data["files_skipped"] = [
            {**sk, "path": _name_in(sk["path"], self.directory)} for sk in data["files_skipped"]
        ]
        return data

    def remove(self, source: str) -> None:
        """Delete the kept copy of an upload whose document was deleted (others are left)."""
        path = Path(source)
        if path.parent == self.directory and not path.name.startswith("."):
            path.unlink(missing_ok=True)
            recorded = self._names()
            if recorded.pop(path.name, None) is not None:
                _write_json(self.directory / _NAMES, recorded)

    def _check_collision(self, name: str, client: str, recorded: Mapping[str, str]) -> None:
        owner = recorded.get(name)
        if owner is not None and owner != client and (self.directory / name).exists():
            raise ApiError(
                409,
                f"{client!r} would be kept as {name!r}, which holds the upload {owner!r}; "
                f"uploading it would replace that document. Rename the file, or delete the "
                f"other first (DELETE /v1/documents/{name}).",
                "conflict",
            )

    def _names(self) -> dict[str, str]:
        try:
            found = json.loads((self.directory / _NAMES).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def _receive(self, data: BinaryIO) -> Path:
        incoming = self.directory / f"{_INCOMING}{uuid.uuid4().hex}"
        with open(incoming, "wb") as out:
            shutil.copyfileobj(data, out, 1024 * 1024)
        return incoming

    def _previous_slot(self, name: str) -> Path | None:
        if not (self.directory / name).exists():
            return None
        return self.directory / f"{_PREVIOUS}{uuid.uuid4().hex}"

    def _drop_incoming(self) -> None:
        for leftover in self.directory.glob(f"{_INCOMING}*"):
            leftover.unlink(missing_ok=True)

    def _undo(self, s: _Staged) -> None:
        if s.previous is not None and s.previous.exists():
            os.replace(s.previous, s.final)
        else:
            s.final.unlink(missing_ok=True)

    def _settle(self, final: Path, previous: Path | None, indexed: Mapping[str, str]) -> None:
        held = indexed.get(str(final))
        if previous is not None and previous.exists():
            if held is not None and _sha256(previous) == held:
                log.info("restoring %s: the index holds its earlier content", final.name)
                os.replace(previous, final)
            else:
                previous.unlink()
        elif held is None and final.exists():
            log.info("removing %s: the index never took it", final.name)
            final.unlink()

    def _nothing_ingested(self, exc: NothingIngested, plan: list[_Staged]) -> ApiError:
        reasons = "; ".join(
            f"{_name_in(path, self.directory)}: {reason.replace(str(self.directory) + os.sep, '')}"
            for path, reason in exc.skipped
        )
        if not reasons:
            reasons = ", ".join(s.name for s in plan)
        return ApiError(422, f"Nothing could be ingested. Skipped: {reasons}")


def _journal_entry(s: _Staged, client: str) -> dict[str, str | None]:
    return {"name": s.name, "client": client, "previous": s.previous.name if s.previous else None}


def _name_in(path: str, directory: Path) -> str:
    """A path under the upload directory as the upload's name; any other path as given."""
    p = Path(path)
    return p.name if p.parent == directory else path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    """Written whole or not at all, and on disk before the renames it describes."""
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
