"""The ``strangler`` command line (docs/reference.md, "The command line"):
serve, check, explain, status, demo.

Settings are resolved here once, from flags with environment fallbacks; a fatal problem is
printed plainly and the process exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import uvloop

from proxy import __version__
from proxy.app import Application, create_app
from proxy.clientaddr import parse_networks
from proxy.connection import HeadGuard
from proxy.offline import explain_request, load_compiled, summarise
from proxy.routetests import run_route_tests
from proxy.server import Drain, Listener, ServerGroup
from proxy.settings import (
    ACCESS_LOG_FORMATS,
    DEFAULT_ADMIN_PORT,
    DEFAULT_CONFIG,
    DEFAULT_HOST,
    LOG_LEVELS,
    Limits,
    Settings,
    env_default,
)
from proxy.spans import traces_url
from proxy.status import fetch_report, format_report, format_shadow
from proxy.table.loader import TableError
from proxy.tls import Certificates, TLSError, load_pair
from proxy.workers import MULTIPROC_DIR, Supervisor, WorkerSockets, watch_supervisor

MONOLITH_PORT = 8081
#: Where `strangler demo` runs the reviews service (config/routes.yaml's `reviews` backend).
REVIEWS_PORT = 8082


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    #: As given, for `--workers`, whose workers run this same command.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # Function handlers named in a table are imported from the current directory first, as
    # `python -m` and uvicorn's --app-dir do; a console script alone would not look there.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strangler",
        description="A gateway for Strangler Fig migrations.",
    )
    parser.add_argument("--version", action="version", version=f"strangler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    _config_flag(serve)
    _serving_flags(serve, default_host=env_default("HOST", DEFAULT_HOST))
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate a routing table without serving")
    _config_flag(check)
    check.add_argument(
        "--tests",
        metavar="FILE",
        help="also run these route tests (request -> expected route, backend)",
    )
    check.set_defaults(run=_check)

    explain = commands.add_parser("explain", help="say which route and backend a request gets")
    _config_flag(explain)
    explain.add_argument("method", metavar="METHOD")
    explain.add_argument("url", metavar="URL", help="a path (/products/7?x=1) or a full URL")
    explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="a request header; repeat for more",
    )
    explain.set_defaults(run=_explain)

    status = commands.add_parser("status", help="show a running gateway's migration progress")
    status.add_argument(
        "--admin",
        default=env_default("ADMIN_URL", f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"),
        help="the gateway's admin URL (STRANGLER_ADMIN_URL, default %(default)s)",
    )
    status.set_defaults(run=_status)

    rollout = commands.add_parser(
        "rollout", help="ramp routes step by step on their own metrics (docs/rollout.md)"
    )
    _config_flag(rollout)
    where = rollout.add_mutually_exclusive_group(required=True)
    where.add_argument("--prometheus", metavar="URL", help="read every replica's metrics here")
    where.add_argument(
        "--admin",
        metavar="URL",
        action="append",
        help="a gateway's admin URL, whose /metrics is read; once per replica",
    )
    rollout.add_argument("--once", action="store_true", help="decide once and exit")
    rollout.add_argument(
        "--dry-run", action="store_true", help="print the decisions; write nothing, lock nothing"
    )
    rollout.add_argument(
        "--interval", default="30s", help="time between rounds (default %(default)s)"
    )
    rollout.add_argument(
        "--state", metavar="FILE", help="the state file (default: the table's name + .rollout.json)"
    )
    rollout.add_argument(
        "--kubernetes-configmap",
        metavar="NAMESPACE/NAME[/KEY]",
        help="edit the table in this ConfigMap (key routes.yaml) instead of -c's file",
    )
    rollout.add_argument(
        "--kubernetes-api",
        metavar="URL",
        help="the API server (default: the pod's own cluster, with its ServiceAccount)",
    )
    rollout.set_defaults(run=_rollout)

    inventory = commands.add_parser(
        "inventory", help="what the monolith still serves, merged over gateways (docs/inventory.md)"
    )
    inventory.add_argument(
        "--admin",
        action="append",
        metavar="URL",
        help="a gateway's admin URL; once per replica (default: STRANGLER_ADMIN_URL or "
        f"http://127.0.0.1:{DEFAULT_ADMIN_PORT})",
    )
    shown = inventory.add_mutually_exclusive_group()
    shown.add_argument("--suggest", action="store_true", help="print route entries to paste")
    shown.add_argument(
        "--record", metavar="DIR", help="write the samples as route tests and JSON fixtures"
    )
    inventory.set_defaults(run=_inventory)

    demo = commands.add_parser("demo", help="run the stub monolith and the gateway together")
    _config_flag(demo)
    _serving_flags(demo, default_host="127.0.0.1")
    demo.add_argument("--monolith-port", type=int, default=MONOLITH_PORT)
    demo.add_argument("--reviews-port", type=int, default=REVIEWS_PORT)
    demo.set_defaults(run=_demo)
    return parser


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=env_default("CONFIG", DEFAULT_CONFIG),
        help="the routing table (STRANGLER_CONFIG, default %(default)s)",
    )


def _env_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    kind: type[int] | type[float] | type[str],
    default: object,
    help: str,
    metavar: str | None = None,
) -> None:
    """A flag whose default comes from ``STRANGLER_<FLAG>``, else from ``default``."""
    env = flag.lstrip("-").replace("-", "_").upper()
    parser.add_argument(
        flag,
        type=kind,
        default=kind(env_default(env, str(default))),
        metavar=metavar,
        help=f"{help} (STRANGLER_{env}, default {'%(default)s' if default != '' else 'none'})",
    )


def _serving_flags(parser: argparse.ArgumentParser, default_host: str) -> None:
    defaults, limits = Settings(), Limits()
    parser.add_argument(
        "--host", default=default_host, help="public address (STRANGLER_HOST, default %(default)s)"
    )
    _env_flag(parser, "--port", int, defaults.port, "public port")
    _env_flag(parser, "--admin-host", str, defaults.admin_host, "admin address")
    _env_flag(parser, "--admin-port", int, defaults.admin_port, "admin port")
    _env_flag(
        parser,
        "--admin-allowed-hosts",
        str,
        "",
        "comma-separated host names the admin port answers to, besides localhost, IP "
        "addresses and --admin-host (a page elsewhere cannot rebind a name to it)",
        "NAME,...",
    )
    _env_flag(parser, "--workers", int, defaults.workers, "worker processes")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default=env_default("LOG_LEVEL", defaults.log_level)
    )
    parser.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch the routing table or the TLS files for changes",
    )
    _env_flag(
        parser,
        "--trusted-proxies",
        str,
        "",
        "comma-separated CIDR blocks whose "
        "X-Forwarded-For/-Proto/-Host and Forwarded headers are believed",
        "CIDR,...",
    )
    _env_flag(
        parser, "--max-uri-bytes", int, limits.max_uri_bytes, "longest path and query; 414 beyond"
    )
    _env_flag(parser, "--max-headers", int, limits.max_headers, "most header fields; 431 beyond")
    _env_flag(
        parser,
        "--max-header-bytes",
        int,
        limits.max_header_bytes,
        "largest total of header names and values; 431 beyond",
    )
    _env_flag(
        parser,
        "--body-idle-timeout",
        float,
        limits.body_idle_timeout,
        "longest pause inside a request body; 408 beyond",
        "SECONDS",
    )
    _env_flag(
        parser,
        "--head-timeout",
        float,
        defaults.head_timeout,
        "time a client has to send a request's line and headers; 408 beyond",
        "SECONDS",
    )
    _env_flag(
        parser,
        "--shutdown-grace",
        float,
        defaults.shutdown_grace,
        "after SIGTERM, keep serving new requests this long while /readyz says 503",
        "SECONDS",
    )
    _env_flag(
        parser,
        "--drain-timeout",
        float,
        defaults.drain_timeout,
        "then give requests in flight at most this long",
        "SECONDS",
    )
    parser.add_argument(
        "--access-log",
        choices=ACCESS_LOG_FORMATS,
        default=env_default("ACCESS_LOG", defaults.access_log),
        help="one JSON line per request on stdout, or none (STRANGLER_ACCESS_LOG, default "
        "%(default)s)",
    )
    _env_flag(
        parser,
        "--otlp-endpoint",
        str,
        "",
        "export a span per request over OTLP/HTTP to URL/v1/traces",
        "URL",
    )
    _env_flag(
        parser, "--tls-cert", str, "", "serve the public port over TLS: the PEM chain", "FILE"
    )
    _env_flag(parser, "--tls-key", str, "", "and its PEM private key", "FILE")
    parser.add_argument(
        "--inventory",
        choices=("on", "off"),
        default=env_default("INVENTORY", defaults.inventory),
        help="keep what legacy backends serve, by path template (STRANGLER_INVENTORY, "
        "default %(default)s)",
    )
    _env_flag(
        parser,
        "--redact-headers",
        str,
        "",
        "headers never kept in the inventory's samples, besides Cookie, Authorization, "
        "Set-Cookie (comma-separated)",
        "NAMES",
    )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        config=args.config,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        admin_allowed_hosts=tuple(
            h.strip() for h in args.admin_allowed_hosts.split(",") if h.strip()
        ),
        workers=args.workers,
        log_level=args.log_level,
        watch=not args.no_watch,
        trusted_proxies=tuple(p for p in args.trusted_proxies.split(",") if p.strip()),
        limits=Limits(
            args.max_uri_bytes, args.max_headers, args.max_header_bytes, args.body_idle_timeout
        ),
        head_timeout=args.head_timeout,
        shutdown_grace=args.shutdown_grace,
        drain_timeout=args.drain_timeout,
        access_log=args.access_log,
        otlp_endpoint=args.otlp_endpoint or None,
        tls_cert=args.tls_cert or None,
        tls_key=args.tls_key or None,
        inventory=args.inventory,
        redact_headers=tuple(
            h.strip().lower() for h in args.redact_headers.split(",") if h.strip()
        ),
    )


def _drain(settings: Settings) -> Drain:
    return Drain(grace=settings.shutdown_grace, timeout=settings.drain_timeout)


def _guard(settings: Settings) -> HeadGuard:
    return HeadGuard.for_limits(settings.head_timeout, settings.limits)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":
        # uvicorn announces each of the process's listeners at INFO, httpx logs every upstream
        # request and watchfiles every file event: the banner says the first once, the reload
        # log says what matters of the last, the rest is noise.
        for name in ("uvicorn.error", "httpx", "httpcore", "watchfiles"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # The OTLP exporter warns at every retry while a collector is down; a lost batch is
        # still an error, and counted (strangler_telemetry_dropped_total).
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)


def _not_loaded(config: str, exc: TableError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"strangler: {config}: not loaded ({len(exc.problems)} problems)", file=sys.stderr)


def _load(settings: Settings) -> Application | None:
    try:
        return create_app(settings)
    except TableError as exc:
        _not_loaded(settings.config, exc)
        return None
    except ValueError as exc:  # a setting that cannot be used, such as a bad trusted proxy
        print(f"strangler: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.workers < 1:
        print("strangler: --workers must be at least 1", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    inherited = WorkerSockets.from_environment()
    if inherited is not None:
        settings = dataclasses.replace(
            settings, metrics_dir=os.environ.get(MULTIPROC_DIR), supervised=True
        )
    elif settings.workers > 1:
        return _supervise(args, settings)
    served = _public_and_admin(settings)
    if served is None:
        return 1
    application, tls, gateway, admin = served
    if inherited is not None:
        gateway.sock, admin.sock = inherited.public, inherited.admin
    group = ServerGroup(
        [gateway, admin], _drain(settings), application.start_draining, _guard(settings)
    )

    def banner() -> list[str]:
        return [
            f"strangler {__version__}: table {settings.config} "
            f"(version {application.runtime.table.version})",
            f"  gateway  {gateway.url}",
            f"  admin    {admin.url}",
        ]

    return _run_with_banner(group, application, banner, inherited, tls)


def _public_and_admin(
    settings: Settings,
) -> tuple[Application, Certificates | None, Listener, Listener] | None:
    """The app, its certificates, and the gateway's and the admin port's listeners; None
    (the reason printed) when the certificates or the table do not load."""
    try:
        tls = _certificates(settings)
    except TLSError as exc:
        print(f"strangler: cannot serve TLS: {exc}", file=sys.stderr)
        return None
    application = _load(settings)
    if application is None:
        return None
    listening = tls.listening if tls is not None else None
    gateway = Listener("gateway", application.public, settings.host, settings.port, tls=listening)
    admin = Listener("admin", application.admin, settings.admin_host, settings.admin_port)
    return application, tls, gateway, admin


def _tls_files(settings: Settings) -> tuple[str, str] | None:
    """The certificate and key files, or None for plain HTTP; TLSError when only one is
    given."""
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        given, missing = ("cert", "key") if settings.tls_key is None else ("key", "cert")
        raise TLSError(
            f"--tls-{given} is given without --tls-{missing} (STRANGLER_TLS_CERT and "
            "STRANGLER_TLS_KEY: both or neither)"
        )
    return settings.tls_cert, settings.tls_key


def _certificates(settings: Settings) -> Certificates | None:
    """The public port's certificates, loaded (TLSError when they do not load), or None."""
    files = _tls_files(settings)
    return None if files is None else Certificates(*files)


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``--workers N``: check what every worker will load, then run them (proxy.workers)."""
    try:
        table = load_compiled(settings.config)
        parse_networks(settings.trusted_proxies)
        if settings.otlp_endpoint is not None:
            traces_url(settings.otlp_endpoint)
        files = _tls_files(settings)
        if files is not None:
            load_pair(*files)  # each worker loads its own; checked once here, for a clear exit
    except TableError as exc:
        _not_loaded(settings.config, exc)
        return 1
    except TLSError as exc:
        print(f"strangler: cannot serve TLS: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"strangler: {exc}", file=sys.stderr)
        return 1

    def announce(gateway: str, admin: str) -> None:
        # stderr: stdout carries the access log and nothing else (docs/observability.md).
        lines = [
            f"strangler {__version__}: table {settings.config} (version {table.version})",
            f"  gateway  {gateway}",
            f"  admin    {admin}",
            f"  workers  {settings.workers}",
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)

    supervisor = Supervisor(
        settings.workers,
        args.argv,
        (settings.host, settings.port),
        (settings.admin_host, settings.admin_port),
        announce,
        tls=files is not None,
    )
    return supervisor.run()


def _run_with_banner(
    group: ServerGroup,
    application: Application,
    banner: Callable[[], list[str]],
    worker: WorkerSockets | None = None,
    tls: Certificates | None = None,
) -> int:
    """Serve ``group``; print the banner once it serves, or, in a worker, tell the
    supervisor. ``tls``'s files are reloaded with the table (SIGHUP, watching)."""
    if any(listener.sock is None for listener in group.listeners):
        try:
            group.bind()
        except OSError as exc:
            print(f"strangler: cannot listen: {exc}", file=sys.stderr)
            return 1

    def announce() -> None:
        if worker is not None:
            worker.report_ready()
            return
        # stderr: stdout carries the access log and nothing else (docs/observability.md).
        print("\n".join(banner()), file=sys.stderr, flush=True)

    def reload_on_hangup() -> None:
        application.request_reload("SIGHUP")
        if tls is not None:
            tls.reload("SIGHUP")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP reloads the table and the TLS files (by default it would end the process).
        loop.add_signal_handler(signal.SIGHUP, reload_on_hangup)
        if tls is not None and application.settings.watch:
            tls.start()
        watchdog = None
        if worker is not None:
            watchdog = loop.create_task(watch_supervisor(lambda: group.begin_drain(0.0)))
        await application.start()
        _tune_gc()
        try:
            await group.serve(on_started=announce)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if tls is not None:
                await tls.aclose()
            await application.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


def _tune_gc() -> None:
    """Fewer, cheaper collections while serving. Every request allocates a few hundred
    short-lived objects, so the default first-generation threshold (700) ran a collection every
    few requests over everything loaded at start: about an eighth of the CPU in a profile under
    load. Objects alive now (modules, the table, the app) are frozen out of collections, and
    the threshold is raised (measured in bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _check(args: argparse.Namespace) -> int:
    try:
        table = load_compiled(args.config)
    except TableError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{args.config}: invalid ({len(exc.problems)} problems)")
        return 1
    print(f"{args.config}: ok ({summarise(table)})")
    if args.tests is None:
        return 0
    try:
        count, failures = run_route_tests(table, args.tests)
    except TableError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{args.tests}: not a valid route test file ({len(exc.problems)} problems)")
        return 1
    for failure in failures:
        print(failure)
    if failures:
        print(f"{args.tests}: {len(failures)} of {count} route tests failed")
        return 1
    print(f"{args.tests}: {count} route tests passed")
    return 0


def _explain(args: argparse.Namespace) -> int:
    try:
        text, matched = explain_request(args.config, args.method, args.url, args.header)
    except TableError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"strangler explain: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0 if matched else 1


def _status(args: argparse.Namespace) -> int:
    from proxy.rollouts import format_rollouts

    for path in ("/migration", "/shadow", "/rollouts"):
        try:
            report = fetch_report(args.admin, path)
        except httpx.HTTPError as exc:
            print(f"strangler status: cannot read {args.admin}{path}: {exc}", file=sys.stderr)
            return 1
        if path == "/migration":
            text = format_report(report)
        else:
            text = format_shadow(report) if path == "/shadow" else format_rollouts(report)
        if text:
            print(text if path == "/migration" else "\n" + text)
    return 0


def _inventory(args: argparse.Namespace) -> int:
    from proxy.inventory_cli import fetch, format_table, record, suggest

    admins = args.admin or [env_default("ADMIN_URL", f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}")]
    try:
        report = fetch(admins, samples=args.record is not None)
    except httpx.HTTPError as exc:
        print(f"strangler inventory: cannot read an inventory: {exc}", file=sys.stderr)
        return 1
    if args.suggest:
        print(suggest(report), end="")
    elif args.record is not None:
        count = record(report, Path(args.record))
        print(f"{count} samples written to {args.record} (routes.tests.yaml, fixtures/)")
    else:
        print(format_table(report))
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from proxy.rollout.controller import Controller, run
    from proxy.rollout.sources import AdminSource, PrometheusSource, Source
    from proxy.rollout.state import Lock, LockHeld, lock_path, state_path
    from proxy.rollout.stores import ConfigMapStore, FileStore, Store, StoreError, in_cluster_client
    from proxy.table.yamlnodes import parse_duration

    _setup_logging(env_default("LOG_LEVEL", "info"))
    interval = parse_duration(args.interval)
    if interval is None:
        print(f"strangler rollout: --interval {args.interval!r} is not a duration", file=sys.stderr)
        return 2
    lock: Lock | None = None
    store: Store
    try:
        if args.kubernetes_configmap:
            # One controller: a one-replica Deployment, and every write a compare-and-swap.
            namespace, _, rest = args.kubernetes_configmap.partition("/")
            name, _, key = rest.partition("/")
            if not namespace or not name:
                print(
                    "strangler rollout: --kubernetes-configmap is NAMESPACE/NAME[/KEY]",
                    file=sys.stderr,
                )
                return 2
            api, kube = in_cluster_client(args.kubernetes_api)
            store = ConfigMapStore(api, namespace, name, key or "routes.yaml", kube)
        else:
            table = Path(args.config)
            state_file = Path(args.state) if args.state else state_path(table)
            store = FileStore(table, state_file)
            if not args.dry_run:
                lock = Lock(lock_path(table))
                lock.acquire()
    except LockHeld as exc:
        print(f"strangler rollout: another controller runs: {exc}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as exc:
        print(f"strangler rollout: {exc}", file=sys.stderr)
        return 1
    try:
        client = httpx.Client(timeout=10)
        source: Source = (
            PrometheusSource(args.prometheus, client)
            if args.prometheus
            else AdminSource(args.admin, client, {})
        )
        controller = Controller(store, source, dry_run=args.dry_run)
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        run(controller, interval, args.once, stopping.is_set)
    finally:
        if lock is not None:
            lock.release()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from legacy_monolith.app import create_app as create_monolith
    from new_services.reviews.app import create_app as create_reviews

    settings = _settings(args)
    _setup_logging(settings.log_level)
    served = _public_and_admin(settings)
    if served is None:
        return 1
    application, tls, gateway, admin = served
    monolith = Listener("monolith", create_monolith(), "127.0.0.1", args.monolith_port, plain=True)
    # The one new service that is an HTTP server of its own rather than a function.
    reviews = Listener("reviews", create_reviews(), "127.0.0.1", args.reviews_port, plain=True)
    group = ServerGroup(
        [monolith, reviews, gateway, admin],
        _drain(settings),
        application.start_draining,
        _guard(settings),
    )

    def banner() -> list[str]:
        return [
            "strangler demo: the stub monolith behind the gateway",
            f"  gateway   {gateway.url}        routes from {settings.config}",
            f"  admin     {admin.url}/routes",
            f"  monolith  {monolith.url}        the legacy application, direct",
            f"  reviews   {reviews.url}        the reviews service, direct (its own paths)",
            "",
            f"  try:  curl -i {gateway.url}/products?category=books",
            f"        curl -i {gateway.url}/products/7/reviews",
            "        curl -i -H 'Content-Type: application/json' "
            '-d \'{"username":"alice","password":"alice-password"}\' '
            f"{gateway.url}/auth/login",
            "  Ctrl-C stops everything.",
        ]

    return _run_with_banner(group, application, banner, tls=tls)
