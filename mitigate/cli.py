"""The ``mitigate`` command line.

Heavy libraries (torch, umap, hdbscan) are imported inside the subcommands,
so ``mitigate --help`` returns without loading them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_ATTRACTOR = 1
EXIT_USAGE = 2

logger = logging.getLogger("mitigate")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with the ``run`` and ``detect`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="mitigate",
        description="Find hypnotic attractors in a model's latent space, remove them by "
                    "root cause, and verify the fix in a before/after audit report.",
    )
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="log warnings and errors only, and show no progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", parents=[common],
                              help="run a retraining recipe end to end and write the audit report")
    run.add_argument("recipe", type=Path, help="path of a recipe TOML file, e.g. recipes/fashion_patch.toml")
    run.add_argument("--out", type=Path, required=True, help="output folder for models and reports")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="folder with the data files (overrides [data] dir in the recipe)")
    run.add_argument("--restart", action="store_true",
                     help="discard an earlier run in --out instead of resuming it")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one recipe value (TOML syntax), e.g. --set train.epochs=1")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mitigate`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {"run": _cmd_run}
    try:
        return handlers[args.command](args)
    finally:
        _remove_handlers()


_ADDED_HANDLERS: list = []


def _remove_handlers() -> None:
    """Detach and close the handlers this command added (matters when called in-process)."""
    root = logging.getLogger()
    while _ADDED_HANDLERS:
        handler = _ADDED_HANDLERS.pop()
        root.removeHandler(handler)
        handler.close()


def _configure_logging(args, log_file: Path | None) -> None:
    level = logging.INFO
    if args.quiet:
        level = logging.WARNING
    elif args.verbose:
        level = logging.DEBUG
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    _remove_handlers()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    _ADDED_HANDLERS.append(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG if args.verbose else logging.INFO)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(file_handler)
        _ADDED_HANDLERS.append(file_handler)
    for noisy in ("numba", "matplotlib", "PIL", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_overrides(pairs: list[str]) -> dict:
    import tomllib

    overrides: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise ValueError(f"invalid --set {pair!r}; expected SECTION.KEY=VALUE, e.g. train.epochs=1")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        overrides.setdefault(section, {})[name] = parsed
    return overrides


def _cmd_run(args) -> int:
    from mitigate.recipe import RecipeError, load_recipe, parse_recipe

    _configure_logging(args, None)
    try:
        recipe = load_recipe(args.recipe)
        if args.set:
            recipe = parse_recipe(recipe.text, path=recipe.path, overrides=_parse_overrides(args.set))
    except (RecipeError, ValueError) as err:
        logger.error("%s", err)
        return EXIT_USAGE

    _configure_logging(args, args.out / "run.log")
    from mitigate.data import DataNotFoundError
    from mitigate.pipeline import OutputFolderError
    from mitigate.run import run_recipe

    try:
        audit = run_recipe(recipe, args.out, data_dir=args.data_dir, restart=args.restart,
                           progress=not args.quiet)
    except (OutputFolderError, DataNotFoundError, RecipeError) as err:
        logger.error("%s", err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        logger.error("interrupted; no report was written. Run the same command again to resume "
                     "from the saved models and checkpoints in %s", args.out)
        return 130
    logger.info("verdict: %s — report: %s", audit["verdict"], args.out / "report.html")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
