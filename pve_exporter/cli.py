"""Command line: argv → Settings → daemon; subcommands; exit codes (0 ok, 1 runtime error, 2 bad config/usage)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import getpass
import hashlib
import json
import os
import sys
from collections.abc import Sequence

import yaml

from pve_exporter import __version__, logs
from pve_exporter.settings import (
    ConfigError,
    config_notes,
    load_settings,
    masked,
    permission_warnings,
    readable_by_others,
)

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
SUBCOMMANDS = ("run", "demo", "simulate", "check-config", "hash-token", "check-dashboard", "check-rules")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pve-exporter",
        description="Watch Proxmox VE clusters: Prometheus /metrics, InfluxDB push, guest power control API.",
        epilog="Subcommands: demo | simulate | check-config FILE | hash-token | check-dashboard FILE.json | "
        "check-rules FILE.yml (pve-exporter SUBCOMMAND --help)",
    )
    p.add_argument("--config", "-c", help="YAML config file (see README); optional when the environment "
                   "defines the clusters (PVE_EXPORTER_CLUSTERS='[{...}]')")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides logging.level")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="overrides logging.format")
    p.add_argument(
        "--web-config-file",
        help="TLS and basic auth for the listener (exporter-toolkit format); overrides web_config_file",
    )
    p.add_argument("--version", action="version", version=f"pve-exporter {__version__}")
    return p


def _configure_logging(settings_logging: object, level: str | None, fmt: str | None) -> None:
    lvl = level or getattr(settings_logging, "level", "info")
    f = fmt or getattr(settings_logging, "format", "auto")
    logs.configure(lvl, f)


def _warn(message: str) -> None:
    """A config problem that does not stop the daemon (a log line once logging is set up)."""
    import structlog

    structlog.get_logger("pve_exporter.config").warning(message)


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena; the pollers' parse threads would
    leave RSS fragmented over many of them. Two are plenty (same as MALLOC_ARENA_MAX=2)."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, e.g. Alpine): nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX


def cmd_run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pve-exporter: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not settings.clusters:
        print("pve-exporter: invalid configuration:\nclusters: at least one cluster is required (in --config FILE, "
              "or in the environment: PVE_EXPORTER_CLUSTERS='[{\"name\": ...}]')", file=sys.stderr)
        return EXIT_CONFIG
    web_config = None
    web_file = args.web_config_file or settings.web_config_file
    if web_file:
        from pve_exporter.webconfig import load_web_config

        try:
            web_config = load_web_config(web_file)
        except ConfigError as exc:
            print(f"pve-exporter: invalid web configuration:\n{exc}", file=sys.stderr)
            return EXIT_CONFIG
    _configure_logging(settings.logging, args.log_level, args.log_format)
    warnings = config_notes(settings) + permission_warnings(args.config, settings)
    warnings += readable_by_others(web_config.secret_files()) if web_config is not None else []
    for warning in warnings:
        _warn(warning)
    _limit_malloc_arenas()
    from pve_exporter.app import serve

    return asyncio.run(serve(settings, config_path=args.config, web_config=web_config))


def cmd_check_config(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="pve-exporter check-config", description="Validate a config file.")
    p.add_argument("file", nargs="?", help="the config file (none: the environment alone)")
    p.add_argument("--json", action="store_true", help="print the effective config as JSON instead of YAML")
    args = p.parse_args(argv)
    source = args.file or "environment"
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"{source}: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    for note in config_notes(settings):
        print(f"note: {note}", file=sys.stderr)
    for warning in permission_warnings(args.file, settings):
        print(f"warning: {warning}", file=sys.stderr)
    doc = masked(settings)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    print(f"{source}: OK ({len(settings.clusters)} cluster(s))", file=sys.stderr)
    return EXIT_OK


def cmd_hash_token(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="pve-exporter hash-token",
        description="Read a control-API token (stdin or prompt) and print its SHA-256 for control.tokens[].sha256.",
    )
    p.parse_args(argv)
    secret = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    secret = secret.strip()
    if not secret:
        print("pve-exporter hash-token: empty token", file=sys.stderr)
        return EXIT_CONFIG
    print(hashlib.sha256(secret.encode()).hexdigest())
    return EXIT_OK


def cmd_simulate(argv: Sequence[str]) -> int:
    from pve_exporter.simulator import cli as sim_cli

    p = argparse.ArgumentParser(prog="pve-exporter simulate", description="Run the built-in PVE API simulator.")
    sim_cli.add_arguments(p)
    return sim_cli.run(p.parse_args(argv))


def cmd_demo(argv: Sequence[str]) -> int:
    from pve_exporter import demo

    return demo.main(argv)


def cmd_check_dashboard(argv: Sequence[str]) -> int:
    from pve_exporter import migrate

    return migrate.main("dashboard", argv)


def cmd_check_rules(argv: Sequence[str]) -> int:
    from pve_exporter import migrate

    return migrate.main("rules", argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        cmd, rest = argv[0], argv[1:]
        handler = {
            "run": cmd_run,
            "demo": cmd_demo,
            "simulate": cmd_simulate,
            "check-config": cmd_check_config,
            "hash-token": cmd_hash_token,
            "check-dashboard": cmd_check_dashboard,
            "check-rules": cmd_check_rules,
        }[cmd]
        return handler(rest)
    return cmd_run(argv)
