"""The `medbabel` command (also `python -m pipeline`): run stages, write fingerprints, check configs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config
from pipeline.executors import TaskFailedError
from pipeline.handoff import HandoffError
from pipeline.registry import RegistryError, UnassignedLanguageError, UnknownLanguageError
from pipeline.run_lock import OutputLockedError, run_lock

EXIT_ERROR = 2


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("medbabel")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed; run `make setup`)"


def _parser() -> argparse.ArgumentParser:
    from pipeline.dag import STAGES

    parser = argparse.ArgumentParser(prog="medbabel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medbabel {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="configs/demo.yaml", help="run config (YAML)")
        p.add_argument("--out", default="out", help="output directory")

    stage_lines = "\n".join(f"  {spec.name:<10} {spec.description}" for spec in STAGES)
    run = sub.add_parser(
        "run",
        help="run one stage (resumes an interrupted attempt)",
        description=f"Run one stage (resumes an interrupted attempt). Stages, in DAG order:\n{stage_lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("stage", metavar="STAGE", help=f"one of: {', '.join(spec.name for spec in STAGES)}")
    common(run)
    run.add_argument("--force", action="store_true", help="discard the stage's previous output and run again")
    run.add_argument("--wait", action="store_true", help="when another run holds OUT, wait for it")

    fp = sub.add_parser(
        "fingerprint", help="write OUT/.fingerprints/<stage>, touching only those that changed"
    )
    common(fp)
    fp.add_argument("--wait", action="store_true", help="when another run holds OUT, wait for it")

    check = sub.add_parser("check-config", help="validate a config and the language registry")
    common(check)

    why = sub.add_parser(
        "explain", help="show where one record went and every language-ID and quality signal behind it"
    )
    why.add_argument("id", help="record id (as in the `id` column)")
    common(why)
    why.add_argument("--json", action="store_true", help="print JSON instead of text")

    sub.add_parser("stages", help="list the stages in DAG order")
    sub.add_parser("schema-doc", help="print the record schema as Markdown (docs/schema.md)")
    sub.add_parser(
        "config-schema",
        help=f"print the config's JSON Schema ({CONFIG_SCHEMA_FILE}; configs name it for editors to validate)",
    )
    return parser


CONFIG_SCHEMA_FILE = "configs/medbabel.schema.json"


def config_json_schema() -> str:
    """The run config's JSON Schema (configs/medbabel.schema.json is this text; a test keeps them equal)."""
    import json

    from pipeline.config import Config

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Config.model_json_schema()}
    schema["title"] = "medbabel run config"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pipeline.console import progress_bars_off_unless_terminal

    args = _parser().parse_args(argv)
    progress_bars_off_unless_terminal()
    from pipeline.dag import STAGE_BY_NAME, STAGES, StageInputError

    try:
        if args.command == "stages":
            for spec in STAGES:
                print(f"{spec.name:<10} <- {', '.join(spec.inputs) or '(sources)':<28} {spec.description}")
            return 0
        if args.command == "schema-doc":
            from pipeline.schema import schema_markdown

            print(schema_markdown(), end="")
            return 0
        if args.command == "config-schema":
            print(config_json_schema(), end="")
            return 0
        cfg = load_config(args.config)
        if args.command == "check-config":
            from pipeline.dag import load_stage_module
            from pipeline.registry import load_registry

            registry = load_registry(cfg.registry_path())
            registry.resolve_scheme(cfg.registry.scheme)
            for spec in STAGES:
                module = load_stage_module(spec)
                if hasattr(module, "validate"):
                    module.validate(cfg, registry)
            print(f"{args.config}: ok ({len(cfg.sources)} sources, {len(registry.languages)} languages)")
            return 0
        if args.command == "explain":
            import json

            from pipeline.explain import explain, format_explanation

            try:
                info = explain(cfg, Path(args.out), args.id)
            except KeyError as exc:
                print(f"error: {exc.args[0]}", file=sys.stderr)
                return EXIT_ERROR
            print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else format_explanation(info))
            return 0
        if args.command == "fingerprint":
            from pipeline.dag import write_fingerprint_files

            out = _output_dir(args.out)
            with run_lock(out, wait=args.wait):
                write_fingerprint_files(cfg, out)
            return 0
        if args.stage not in STAGE_BY_NAME:
            print(f"error: unknown stage '{args.stage}'; stages: {', '.join(STAGE_BY_NAME)}", file=sys.stderr)
            return EXIT_ERROR
        from pipeline.dag import run_stage

        out = _output_dir(args.out)
        with run_lock(out, wait=args.wait):
            run_stage(args.stage, cfg, out, force=args.force)
        return 0
    except (
        ConfigError,
        RegistryError,
        StageInputError,
        UnknownLanguageError,
        UnassignedLanguageError,
        FileNotFoundError,
        TaskFailedError,
        OutputLockedError,
        HandoffError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # disk full, permission denied, a file where a directory belongs
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR


def _output_dir(raw: str) -> Path:
    """OUT as given; a clear error when something that is not a directory sits there."""
    out = Path(raw)
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"output directory {out}: {path} is not a directory")
            break
    return out


if __name__ == "__main__":
    raise SystemExit(main())
