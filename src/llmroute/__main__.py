"""``python -m llmroute``: the `llmroute` command, for an environment whose scripts
directory is not on ``PATH`` (or to pick the interpreter explicitly)."""

from __future__ import annotations

from llmroute.cli import main

if __name__ == "__main__":
    main()
