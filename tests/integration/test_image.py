"""The image's recipe, proven without Docker: the wheel the Dockerfile builds, installed into a
fresh virtual environment with no source tree on the path, the table laid out where the image
expects it, and the Dockerfile's own ENTRYPOINT and HEALTHCHECK run as they are written there."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Process, RawClient, RawUpstream, answer, free_port, response

pytestmark = pytest.mark.sockets


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            found = []  # only the last stage is the image
        found.append((keyword.upper(), rest.strip()))
    return found


class Recipe:
    def __init__(self, dockerfile: Path) -> None:
        steps = instructions(dockerfile)
        self.env: dict[str, str] = {}
        for keyword, rest in steps:
            if keyword == "ENV":
                for pair in shlex.split(rest):
                    name, _, value = pair.partition("=")
                    self.env[name] = value
        self.entrypoint: list[str] = json.loads(next(r for k, r in steps if k == "ENTRYPOINT"))
        healthcheck = next(r for k, r in steps if k == "HEALTHCHECK")
        self.healthcheck: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
        self.exposed = next(r for k, r in steps if k == "EXPOSE").split()
        self.user = next(r for k, r in steps if k == "USER")
        self.copies = [r.split() for k, r in steps if k == "COPY"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the project's wheel (and its dependencies)."""
    base = tmp_path_factory.mktemp("image")
    wheels = base / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("strangler-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
    )
    return venv


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    server = RawUpstream(answer(response(body=b"from the monolith"))).start()
    yield server
    server.stop()


def test_the_image_recipe_serves_from_the_wheel_alone(
    installed: Path, upstream: RawUpstream, tmp_path: Path
) -> None:
    recipe = Recipe(ROOT / "Dockerfile")
    assert recipe.entrypoint == ["strangler", "serve"]
    assert recipe.exposed == ["8080", "9901"]
    assert recipe.user.split(":")[0] not in ("0", "root")
    # The image's table location, laid out under a temporary root.
    config = Path(recipe.env["STRANGLER_CONFIG"])
    assert config == Path("/etc/strangler/routes.yaml")
    assert ["config/routes.yaml", str(config)] in recipe.copies
    laid_out = tmp_path / config.relative_to("/")
    laid_out.parent.mkdir(parents=True)
    laid_out.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{upstream.url}', kind: legacy}}\n"
        "  auth: {function: 'new_services.auth.handler:handler'}\n"
        "routes:\n"
        "  - {name: everything-else, match: {path: /}, backend: monolith}\n"
        "  - {name: auth, match: {path: /auth}, backend: auth}\n"
    )
    port, admin_port = free_port(), free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(recipe.env)
    env.update(
        {
            "PATH": f"{installed / 'bin'}:{env.get('PATH', '')}",
            "STRANGLER_CONFIG": str(laid_out),
            # Loopback in a test; the image listens on every interface.
            "STRANGLER_HOST": "127.0.0.1",
            "STRANGLER_ADMIN_HOST": "127.0.0.1",
            "STRANGLER_PORT": str(port),
            "STRANGLER_ADMIN_PORT": str(admin_port),
            "STRANGLER_SHUTDOWN_GRACE": "0",
            "STRANGLER_DATA_DIR": str(tmp_path / "data"),
        }
    )
    # `/` as the image's working directory: no source tree anywhere on the import path.
    process = Process(recipe.entrypoint, cwd=Path("/"), env=env)
    try:
        process.wait_for_line(r"gateway\s+http://")
        health = subprocess.run(recipe.healthcheck, env=env, cwd="/", timeout=10)
        assert health.returncode == 0
        reply = RawClient(port).request(b"GET /products HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (reply.status, reply.body) == (200, b"from the monolith")
        login = RawClient(port).request(
            b"POST /auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        assert login.status == 401  # the function, from the wheel, refused an empty login
        assert json.loads(login.body)["error"] == "invalid_credentials"
        # The function was imported from the installed wheel, not from this checkout.
        where = subprocess.run(
            [
                str(installed / "bin" / "python"),
                "-c",
                "import new_services, proxy; print(new_services.__file__, proxy.__file__)",
            ],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert str(ROOT) not in where
        assert str(installed) in where
        # Draining makes the health check fail, as a load balancer must see.
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(20) == 0
        assert subprocess.run(recipe.healthcheck, env=env, cwd="/", timeout=10).returncode != 0
    finally:
        process.stop()
