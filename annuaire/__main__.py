"""``python -m annuaire --db-url URL COMMAND``: the annuaire CLI group without the gateway.

Same handlers as ``mssante annuaire ...``; the database URL comes from ``--db-url`` or the
``ANNUAIRE_DB_URL`` environment variable.
"""

from __future__ import annotations

import argparse
import os
import sys

from annuaire import cli


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--db-url", default=os.environ.get("ANNUAIRE_DB_URL", ""))
    known, rest = pre.parse_known_args(argv)
    parser = argparse.ArgumentParser(prog="python -m annuaire [--db-url URL]")
    sub = parser.add_subparsers(dest="group", required=True)
    cli.register(sub)
    args = parser.parse_args(["annuaire", *rest])
    if not known.db_url:
        print("python -m annuaire: error: --db-url or ANNUAIRE_DB_URL is required", file=sys.stderr)
        return 2
    args.db_url = known.db_url
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
