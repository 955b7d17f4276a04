"""The `mssante` command (ARCHITECTURE.md, "The CLI contract").

Exit status: 0 success, 1 failure, 2 usage error. Errors are one clear line on stderr.
Group commands live with their packages; each module exposes `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mssante.config import Config, ConfigError, config_from_dict, load_config

# (module, what it adds). A module that is not importable is reported, not silently skipped.
GROUPS = (
    "pki.cli",
    "mssante.trust.cli",
    "annuaire.cli",
    "mssante.smtp.cli",
    "mssante.y.cli",
    "mssante.dmp.cli",
    "mssante.demo",
)


class CliError(Exception):
    """A failure to report as one line, exit status 1."""


def resolve_config(args: argparse.Namespace) -> Config:
    """The config named by --config, else DIR/mssante.toml, else defaults for DIR."""
    if args.config_path is not None:
        return load_config(args.config_path)
    toml = args.data_dir / "mssante.toml"
    if toml.exists():
        return load_config(toml)
    return config_from_dict({"data_dir": str(args.data_dir.resolve())})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mssante", description="An MSSanté operator gateway.")
    parser.add_argument("--data-dir", type=Path, default=None, help="operator data directory (default ./var)")
    parser.add_argument("--config", dest="config_file", type=Path, default=None, help="configuration file (TOML)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from mssante import commands

    commands.register(sub)
    for name in GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):  # not part of this build
                continue
            raise
        module.register(sub)
    return parser


def _prepare(args: argparse.Namespace) -> None:
    data_dir = getattr(args, "data_dir", None)
    config_file = getattr(args, "config_file", None)
    args.config_path = config_file.resolve() if config_file is not None else None
    args.data_dir = (data_dir or Path("var")).resolve()
    args.db_url = ""
    try:
        cfg = resolve_config(args)
    except ConfigError:
        if args.command in ("init",):
            return
        raise
    args.db_url = cfg.db_url
    if args.config_path is not None:
        args.data_dir = Path(cfg.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        _prepare(args)
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    except CliError as e:
        print(f"mssante: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
