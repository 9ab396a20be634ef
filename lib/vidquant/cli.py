"""`vidquant` command line: quantize / convert / verify / infer / sweep / quantize-grid / train-tiny / demo /
notebooks / tables.

Exit codes: 0 success, 2 user error (bad config, missing file, wrong checkpoint: a one-line message, no
traceback unless --debug), 1 internal failure (traceback printed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


# The user-error classes, by module. Only modules already imported are consulted: an error cannot come from a
# module that was never loaded, and importing one here (torch, diffusers) would make a bad config slow to reject.
_USER_ERRORS = {
    "vidquant.config": "ConfigError",
    "vidquant.calib.samples": "SampleSetError",
    "vidquant.export.io": "CheckpointError",
    "vidquant.export.lightx2v_export": "ExportError",
    "vidquant.models.loading": "ModelLoadError",
    "vidquant.export.converter": "ConverterError",
    "vidquant.lora": "LoraError",
}


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [FileExistsError, FileNotFoundError, PermissionError]
    for module, name in _USER_ERRORS.items():
        if module in sys.modules and hasattr(sys.modules[module], name):
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def cmd_quantize(args: argparse.Namespace) -> int:
    from vidquant.config import load_config

    cfg = load_config(args.config, args.set)  # before the heavy imports: a bad config is rejected at once
    cfg.check_paths()
    from vidquant.run import quantize

    result = quantize(cfg, progress=not args.quiet, stream=True if args.stream else None)
    print(f"results: {result.out_dir}")
    if result.export_dir:
        print(f"lightx2v export: {result.export_dir}")
    for key in ("mean_sqnr_db", "mean_timestep_rel_err", "video_psnr", "video_ssim"):
        if key in result.summary:
            print(f"  {key}: {result.summary[key]:.4g}")
    return 0


def _delegate(module: str, func: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), func)(args.rest) or 0)
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidquant", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="print tracebacks for user errors too")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="run an LLMC video_gen config end to end")
    q.add_argument("--config", required=True, help="LLMC-style YAML config")
    q.add_argument("--set", action="append", default=[], metavar="a.b.c=value", help="override a config field")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--stream", action="store_true", help="one transformer block in memory at a time (automatic "
                   "when the weights exceed available memory); writes the export, skips the eval videos")
    q.set_defaults(func=cmd_quantize)

    delegated = {
        "convert": ("vidquant.export.converter", "main", "lightx2v weight-structure converter (same flags)"),
        "verify": ("vidquant.export.verify", "main", "check an export or a converted checkpoint"),
        "infer": ("vidquant.runtime.infer", "main", "quantized inference (lightx2v's flags)"),
        "sweep": ("vidquant.sweep", "main", "papermill grid over a notebook's parameters"),
        "quantize-grid": ("vidquant.sweep", "quantize_grid_main", "quantize many configs / a grid of overrides"),
        "train-tiny": ("vidquant.train", "main", "train the embedded tiny Wan models"),
        "demo": ("vidquant.demo", "main", "the seed workflow on the tiny I2V model"),
        "notebooks": ("vidquant.sweep", "notebooks_main", "execute every notebook, publish the executed copies"),
        "run-notebook": ("vidquant.run_notebook", "main", "papermill one notebook (-p name value), output path "
                         "chosen: results/runs/<notebook>/<params>/"),
        "tables": ("vidquant.tables", "main", "methods × formats results table on the tiny models"),
    }
    for name, (module, func, help_text) in delegated.items():
        d = sub.add_parser(name, help=help_text, add_help=False)
        d.add_argument("rest", nargs=argparse.REMAINDER)
        d.set_defaults(func=_delegate(module, func))
    return p


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Delegated commands get every token after the command name: an `argparse.REMAINDER` positional drops
    leading options (`vidquant infer --model_cls ...` would fail with "unrecognized arguments")."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "rest"):
        args.rest = argv[argv.index(args.command) + 1:]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI boundary decides how errors look
        if isinstance(err, _user_errors()):
            if args.debug:
                traceback.print_exc()
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        traceback.print_exc()
        print(f"internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
