"""``python -m rag.cli``: the ``rag`` command."""

from rag.cli.app import main

raise SystemExit(main())
