"""Command-line options every graphstore process shares: TLS, logging, and how a local
cluster supervises its children.

The ``graphstore`` command and the services' own entry points (``python -m
graphstore.scheduler``, ``python -m graphstore.worker``) build their parsers from these,
so an option is spelled and documented once.
"""
from __future__ import annotations

import argparse
import os


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "mutual TLS", "all three or none (default: GRAPHSTORE_TLS_CERT, GRAPHSTORE_TLS_KEY, "
        "GRAPHSTORE_TLS_CA); see docs/security.md")
    group.add_argument("--tls-cert", default=None, metavar="PEM",
                       help="this process's certificate, signed by the cluster CA")
    group.add_argument("--tls-key", default=None, metavar="PEM",
                       help="its private key (unencrypted; keep it mode 0600)")
    group.add_argument("--tls-ca", default=None, metavar="PEM",
                       help="the cluster CA's certificate: peers must present a "
                            "certificate it signed")
    group.add_argument("--tls-check-hostname", action="store_true", default=None,
                       help="also require a server's certificate to name its host")


def tls_settings(args: argparse.Namespace) -> dict:
    """The TLS options given on the command line (the environment fills the rest)."""
    return {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_ca": args.tls_ca,
            "tls_check_hostname": args.tls_check_hostname}


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """Options of a long-running service process (scheduler, worker)."""
    parser.add_argument("--log-level", default=os.environ.get("GRAPHSTORE_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-dir", default=os.environ.get("GRAPHSTORE_LOG_DIR"),
                        help="directory of this process's log file (default: "
                             "GRAPHSTORE_LOG_DIR, else /tmp/graphstore-sessions/cli-UID/"
                             "logs; a local cluster's session directory for its processes)")
    parser.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--session", default=None, help=argparse.SUPPRESS)


def log_file_for(args: argparse.Namespace, role: str) -> str:
    """The log file of a service process: ``<role>-<pid>.log`` in its log directory."""
    from graphstore.core.logs import default_log_dir
    directory = args.log_dir or default_log_dir(args.session)
    return os.path.join(str(directory), f"{role}-{os.getpid()}.log")


def parse_resource(text: str) -> tuple[str, float]:
    """``NAME=AMOUNT`` -> ``(name, amount)``, for ``--resource``."""
    name, sep, amount = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {text!r}") from None


def parse_label(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> ``(key, value)``, for ``--label``."""
    key, sep, value = text.partition("=")
    if not sep or not key or len(key) > 128 or len(value) > 256:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (a key of 1-128 characters, a value of at most 256), "
            f"got {text!r}")
    return key, value
