"""``rdistill``: parse flags into the stage configs, call the Python API, render tables. Nothing else lives here."""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import sys
import threading

from .errors import RdistillError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM stops as gracefully as Ctrl-C
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugins-dir", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    try:
        from .plugins import load_plugins

        plugins = load_plugins(plugins_dirs=known.plugins_dir)
        parser = build_parser(plugins)
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        return int(args.run(args, plugins) or 0)
    except RdistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: every completed teacher call is journaled in the cache; re-run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130


def _terminate(signum, frame):
    raise KeyboardInterrupt


def build_parser(plugins) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugins-dir", action="append", default=[], metavar="DIR",
                        help="load every .py file in DIR as a plugin (repeatable)")  # fmt: skip
    parser = argparse.ArgumentParser(prog="rdistill", description="Distil an LLM teacher into a small, fast student.",
                                     parents=[common])  # fmt: skip
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for entry in plugins.commands:
        configure, run = entry.obj
        p = sub.add_parser(entry.name, help=entry.options.get("help", ""), parents=[common],
                           description=entry.options.get("help", ""))  # fmt: skip
        configure(p, plugins) if len(inspect.signature(configure).parameters) > 1 else configure(p)  # e.g. trainers' own flags
        p.set_defaults(run=run)
    return parser


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.exit(main())
