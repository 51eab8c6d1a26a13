"""The ``mitigate`` command line.

Heavy libraries (torch, umap, hdbscan) are imported inside the subcommands,
so ``mitigate --help`` returns without loading them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_ATTRACTOR = 1
EXIT_USAGE = 2

logger = logging.getLogger("mitigate")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with the ``run``, ``detect`` and ``report`` subcommands."""
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
    _add_detect_parser(commands, common)
    _add_report_parser(commands, common)
    return parser


def _add_detect_parser(commands, common) -> None:
    """Add ``detect EMBEDDINGS --out DIR`` with its input, detector and gate options."""
    detect = commands.add_parser(
        "detect", parents=[common],
        help="find attractors in precomputed embeddings (no model) and write the report",
        description="Find attractors in precomputed embeddings and write report.json, report.html "
                    "and report.md. Exit status: 0 done, 1 an attractor was flagged and "
                    "--fail-on-attractor is set, 2 usage error.",
    )
    detect.add_argument("embeddings", metavar="EMBEDDINGS",
                        help="a .npy array of shape (n_samples, n_dims), a .parquet file or a folder "
                             "written by datasets' save_to_disk; local paths only")
    detect.add_argument("--out", type=Path, required=True, help="output folder for the report files")

    for option, what in (("--labels", "true classes (integers or strings)"),
                         ("--predictions", "the model's predicted classes, coded like the labels"),
                         ("--ids", "one distinct id per row, written as member ids (default: row index)")):
        detect.add_argument(option, default=None, metavar="FILE|COLUMN",
                            help=f"{what}: a .npy file, a one-column .parquet file, or a column of "
                                 "the EMBEDDINGS table")
    detect.add_argument("--embedding-column", default=None, metavar="NAME",
                        help="column of the EMBEDDINGS table that contains the embeddings (default: "
                             "'embedding', 'embeddings' or the only column of lists)")

    detect.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                        help="distance between embeddings (default: euclidean)")
    detect.add_argument("--min-cluster-size", type=int, default=None, metavar="N",
                        help="HDBSCAN min_cluster_size in rows (default: max(15, n_samples // 50))")
    detect.add_argument("--acs-threshold", type=float, default=None, metavar="ACS",
                        help="ACS at or above which a cluster counts as collapsed (default: 1.25 "
                             "with labels, 2.0 without)")
    copies = detect.add_mutually_exclusive_group()
    copies.add_argument("--no-translated-copies", action="store_true",
                        help="without labels, do not flag clusters that are translated copies of "
                             "other clusters along one shared direction (see docs/scores.md)")
    copies.add_argument("--copy-fit-threshold", type=float, default=None, metavar="FIT",
                        help="without labels, the largest copy fit of a pair of clusters in that "
                             "rule; 1 is a point-for-point copy (default: 2.0)")
    detect.add_argument("--drop-nonfinite", action="store_true",
                        help="drop rows with NaN or infinity, with a warning that counts them, "
                             "instead of stopping with an error that lists them")

    detect.add_argument("--fail-on-attractor", action="store_true",
                        help="exit with status 1 when any attractor is flagged, e.g. to stop a CI job")
    detect.add_argument("--seed", type=int, default=0,
                        help="random seed of PCA and UMAP; the same seed on the same machine gives "
                             "the same clusters (default: 0)")


def _add_report_parser(commands, common) -> None:
    """Add ``report compare BEFORE AFTER --out DIR``."""
    from mitigate.compare import DEFAULT_MATCH_THRESHOLD

    report = commands.add_parser("report", help="work with audit reports already written")
    report_commands = report.add_subparsers(dest="report_command", metavar="REPORT_COMMAND")
    compare = report_commands.add_parser(
        "compare", parents=[common],
        help="compare two audits of the same inputs: attractors persisting, resolved or appeared",
    )
    compare.add_argument("before", type=Path,
                         help="folder with the earlier report.json, e.g. OUT/baseline of a run")
    compare.add_argument("after", type=Path,
                         help="folder with the later report.json, e.g. OUT/retrained of a run")
    compare.add_argument("--out", type=Path, required=True,
                         help="output folder for comparison.html, comparison.json and comparison.md")
    compare.add_argument("--match-threshold", type=float, default=DEFAULT_MATCH_THRESHOLD,
                         metavar="JACCARD",
                         help="smallest Jaccard index of two member sets for their attractors to count "
                              f"as the same attractor, in (0, 1] (default {DEFAULT_MATCH_THRESHOLD})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mitigate`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {"run": _cmd_run, "detect": _cmd_detect, "report": _cmd_report}
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


def _process_rank() -> int:
    """Return the global rank set by a distributed launcher, or 0 without one.

    These are the variables Accelerate 1.x reads for the rank: torchrun's
    ``RANK`` and the MPI implementations' own.
    """
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _configure_logging(args, log_file: Path | None) -> None:
    level = logging.INFO
    if args.quiet:
        level = logging.WARNING
    elif args.verbose:
        level = logging.DEBUG
    if _process_rank() != 0:
        # Under accelerate launch only the main process logs progress and
        # writes the log file; the others report warnings and errors.
        level, log_file = max(level, logging.WARNING), None
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

    created = not args.out.exists()
    _configure_logging(args, args.out / "run.log")
    from mitigate.data import DataNotFoundError
    from mitigate.pipeline import OutputFolderError
    from mitigate.run import run_recipe

    try:
        audit = run_recipe(recipe, args.out, data_dir=args.data_dir, restart=args.restart,
                           progress=not args.quiet)
    except (OutputFolderError, DataNotFoundError, RecipeError) as err:
        logger.error("%s", err)
        if created:
            # These errors come before any training. Removing the folder this command made
            # lets the fixed command start clean and leaves nothing half-written.
            _configure_logging(args, None)
            shutil.rmtree(args.out, ignore_errors=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        logger.error("interrupted; no report was written. Run the same command again to resume "
                     "from the saved models and checkpoints in %s", args.out)
        return 130
    except Exception:
        # Unexpected failures go to run.log with the traceback before Python reports them.
        logger.exception("mitigate run failed; no report was written")
        raise
    logger.info("verdict: %s — report: %s", audit["verdict"], args.out / "report.html")
    return EXIT_OK


def _cmd_detect(args) -> int:
    from mitigate.detect_command import run_detect

    return run_detect(args, lambda log_file: _configure_logging(args, log_file))


def _cmd_report(args) -> int:
    if args.report_command is None:
        sys.stderr.write("mitigate report: missing command; usage: "
                         "mitigate report compare BEFORE AFTER --out DIR\n")
        return EXIT_USAGE
    _configure_logging(args, None)
    import warnings

    from mitigate.compare import ComparisonError, compare_reports, load_report_folder, write_comparison

    try:
        before = load_report_folder(args.before)
        after = load_report_folder(args.after)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            comparison = compare_reports(before, after, threshold=args.match_threshold,
                                         before_path=str(args.before), after_path=str(args.after))
        for warning in caught:
            logger.warning("%s", warning.message)
    except ComparisonError as err:
        logger.error("%s", err)
        return EXIT_USAGE
    paths = write_comparison(args.out, comparison)
    counts = comparison["counts"]
    logger.info("%s: %d resolved, %d persisting, %d appeared — report: %s", comparison["verdict"],
                counts["resolved"], counts["persisting"], counts["appeared"], paths["html"])
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
