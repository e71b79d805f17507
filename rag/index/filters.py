"""Retrieval filters and the one place they become SQL.

The WHERE clause is built here only, so that listing the matching chunks, lexical search and
matching documents by source all agree on what a filter means. Filters are always expressed in
SQL, never as a list of bound chunk ids, because SQLite refuses more than 32,766 variables in one
statement and a filter may match any number of chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Filters:
    """Restrict retrieval to some chunks; every given filter must match."""

    source_glob: str | None = None  # on the path, or the file name when it holds no "/"
    kinds: tuple[str, ...] | None = None  # "pdf", "docx", "html", "text", "markdown"
    pages: tuple[int, int] | None = None  # inclusive, 1-based

    def is_empty(self) -> bool:
        return not (self.source_glob or self.kinds or self.pages)

    def sql(self) -> tuple[str, list[Any]]:
        """This filter as a condition on ``chunks c JOIN documents d``; see :func:`filter_sql`."""
        return filter_sql(source_glob=self.source_glob, kinds=self.kinds, pages=self.pages)

    def key(self) -> tuple[Any, ...]:
        """A hashable key, also when ``kinds`` or ``pages`` were given as lists."""
        return (
            self.source_glob or None,
            tuple(self.kinds) if self.kinds else None,
            tuple(self.pages) if self.pages else None,
        )


def source_glob_sql(pattern: str, column: str = "d.source") -> tuple[str, list[Any]]:
    """SQL matching ``column`` against a glob: the whole path, or the file name when the pattern
    holds no slash (``*.pdf``, ``report-2023*``)."""
    if "/" in pattern:
        return f"{column} GLOB ?", [pattern]
    return f"({column} GLOB ? OR {column} GLOB ?)", [pattern, "*/" + pattern]


def filter_sql(
    *,
    source_glob: str | None = None,
    kinds: Sequence[str] | None = None,
    pages: Sequence[int] | None = None,
) -> tuple[str, list[Any]]:
    """A condition on ``chunks c JOIN documents d`` and its arguments; ``""`` matches everything.

    ``pages`` is an inclusive 1-based range; chunks without a page (text files) never match it.
    The number of arguments depends on the filter only, never on the size of the index.
    """
    where: list[str] = []
    args: list[Any] = []
    if source_glob:
        sql, glob_args = source_glob_sql(source_glob)
        where.append(sql)
        args.extend(glob_args)
    if kinds:
        where.append(f"d.kind IN ({','.join('?' * len(kinds))})")
        args.extend(kinds)
    if pages:
        lo, hi = pages
        where.append("c.page BETWEEN ? AND ?")
        args.extend([int(lo), int(hi)])
    return " AND ".join(where), args
