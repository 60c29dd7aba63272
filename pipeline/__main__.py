"""`python -m pipeline` is the `quota-pipeline` command."""

from __future__ import annotations

from pipeline.cli.main import main

if __name__ == "__main__":
    main()
