"""The public port over TLS (docs/deploy.md, "TLS"), as real `strangler serve` processes and
real TLS clients trusting a CA the test makes: HTTPS through the gateway to a plain upstream,
HTTP/1.1 by ALPN, plain HTTP refused without harm, rotation by a rename, by a Secret's
``..data`` swap and by SIGHUP, for new connections only, with and without SNI, a bad new pair
rejected with the old one kept, a bad pair at start refused, and every worker of
``--workers 2`` rotating; and the Kubernetes overlay that mounts a certificate Secret
(deploy/kubernetes-tls), checked against Kubernetes' schemas."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import trustme
import yaml

from tests.support import (
    LOOPBACK,
    ROOT,
    Process,
    RawUpstream,
    answer,
    need,
    response,
    wait_for,
)

pytestmark = pytest.mark.sockets

#: Generous: a rotation is applied after the watcher's debounce (300 ms); no speed is asserted.
ROTATION_TIMEOUT = 15.0


class PKI:
    """A test CA and the certificates it issues, written where the gateway reads them."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.directory = directory
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str) -> trustme.LeafCert:
        return self.ca.issue_cert("localhost", "127.0.0.1", common_name=name)

    def client(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def pem(issued: trustme.LeafCert) -> tuple[bytes, bytes]:
    return b"".join(p.bytes() for p in issued.cert_chain_pems), issued.private_key_pem.bytes()


def der(issued: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


def replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as tools that care do: a new file renamed over the old."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_bytes(data)
    os.replace(staged, path)


def write_pair(cert: Path, key: Path, issued: trustme.LeafCert) -> None:
    cert_pem, key_pem = pem(issued)
    replace(key, key_pem)
    replace(cert, cert_pem)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    started = RawUpstream(answer(response(body=b"ok"))).start()
    yield started
    started.stop()


def table(directory: Path, upstream: RawUpstream) -> Path:
    config = directory / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  up: {{url: '{upstream.url}'}}\n"
        "routes:\n  - {name: all, match: {path: /}, backend: up}\n"
    )
    return config


class Served:
    """`strangler serve --tls-cert --tls-key` on loopback; stopped by pid by its test."""

    def __init__(self, config: Path, cert: Path, key: Path, *flags: str) -> None:
        args = [sys.executable, "-m", "proxy", "serve", "-c", str(config)]
        args += ["--host", LOOPBACK, "--port", "0", "--admin-port", "0", "--shutdown-grace", "0"]
        args += ["--tls-cert", str(cert), "--tls-key", str(key), *flags]
        self.process = Process(args)
        self.gateway = self.process.wait_for_line(r"gateway\s+(https://\S+)").group(1)
        self.admin = self.process.wait_for_line(r"admin\s+(http://\S+)").group(1)
        self.port = int(self.gateway.rsplit(":", 1)[1])

    def log_line(self, pattern: str) -> str:
        return self.process.wait_for_line(pattern, timeout=ROTATION_TIMEOUT).string

    def stop(self) -> str:
        """Stop by SIGTERM; everything the process said."""
        assert self.process.stop() == 0
        return self.process.output()


@pytest.fixture
def serving() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        if server.process.proc.poll() is None:
            server.process.stop()


def start(started: list[Served], config: Path, cert: Path, key: Path, *flags: str) -> Served:
    server = Served(config, cert, key, *flags)
    started.append(server)
    return server


def handshake(pki: PKI, port: int, server_name: str | None = "localhost") -> ssl.SSLSocket:
    """A new TLS connection to the gateway; ``server_name`` None sends no SNI at all (as a
    client connecting by IP address; the chain is still verified)."""
    context = pki.client()
    context.set_alpn_protocols(["h2", "http/1.1"])
    if server_name is None:
        context.check_hostname = False
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    return context.wrap_socket(sock, server_hostname=server_name)


def served_der(pki: PKI, port: int, server_name: str | None = "localhost") -> bytes:
    with handshake(pki, port, server_name) as connection:
        return connection.getpeercert(binary_form=True) or b""


def connection_der(reply: httpx.Response) -> bytes:
    """The certificate of the connection that carried ``reply``."""
    ssl_object = reply.extensions["network_stream"].get_extra_info("ssl_object")
    # httpcore gives the socket's inner _ssl object, whose getpeercert is positional only.
    return ssl_object.getpeercert(True)  # type: ignore[no-any-return]


@pytest.fixture
def pair(pki: PKI, tmp_path: Path) -> tuple[Path, Path, trustme.LeafCert]:
    directory = tmp_path / "tls"
    directory.mkdir()
    cert, key = directory / "tls.crt", directory / "tls.key"
    first = pki.issue("first")
    write_pair(cert, key, first)
    return cert, key, first


# ---- serving ----------------------------------------------------------------------------------


def test_https_through_the_gateway_reaches_a_plain_upstream(
    pki: PKI, tmp_path: Path, pair: tuple[Path, Path, trustme.LeafCert], serving: list[Served]
) -> None:
    body = bytes(range(256)) * 64 + b"\r\n\r\nend"
    upstream = RawUpstream(
        answer(response(headers=[("Content-Length", str(len(body))), ("X-Up", "1")], body=body))
    ).start()
    try:
        cert, key, _ = pair
        server = start(serving, table(tmp_path, upstream), cert, key)
        assert server.gateway.startswith("https://")
        with httpx.Client(verify=pki.client(), trust_env=False) as client:
            reply = client.get(f"https://localhost:{server.port}/products?q=a%20b")
        assert reply.status_code == 200
        assert reply.http_version == "HTTP/1.1"
        assert reply.content == body
        assert reply.headers["x-up"] == "1"
        (recorded,) = upstream.requests
        assert recorded.request_line == "GET /products?q=a%20b HTTP/1.1"
        assert recorded.header("x-forwarded-proto") == ["https"]
        # The admin port stays plain HTTP.
        assert httpx.get(f"{server.admin}/healthz", trust_env=False).status_code == 200
        curl = shutil.which("curl")
        if curl is not None:
            out = tmp_path / "body"
            args = [curl, "-sS", "--cacert", str(pki.ca_file), "-o", str(out)]
            args += ["-w", "%{http_version} %{response_code}", f"https://localhost:{server.port}/c"]
            result = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == "1.1 200"
            assert out.read_bytes() == body
            assert upstream.requests[-1].header("x-forwarded-proto") == ["https"]
        server.stop()
    finally:
        upstream.stop()


def test_http11_is_negotiated_by_alpn_and_nothing_else_is_offered(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    serving: list[Served],
) -> None:
    cert, key, _ = pair
    server = start(serving, table(tmp_path, upstream), cert, key)
    with handshake(pki, server.port) as connection:
        assert connection.selected_alpn_protocol() == "http/1.1"
        assert connection.version() in ("TLSv1.2", "TLSv1.3")
    # A client that offers only h2 gets no protocol agreed, not h2.
    context = pki.client()
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(
        socket.create_connection((LOOPBACK, server.port), timeout=10), server_hostname="localhost"
    ) as connection:
        assert connection.selected_alpn_protocol() is None


def test_plain_http_to_the_tls_port_fails_cleanly(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    serving: list[Served],
) -> None:
    cert, key, _ = pair
    server = start(serving, table(tmp_path, upstream), cert, key)
    for _ in range(3):
        with socket.create_connection((LOOPBACK, server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
        assert not received.startswith(b"HTTP/")  # closed, at most after a TLS alert
    with httpx.Client(verify=pki.client(), trust_env=False) as client:
        assert client.get(f"https://localhost:{server.port}/").content == b"ok"
    assert "Traceback" not in server.stop()


# ---- rotation ---------------------------------------------------------------------------------


def test_a_pair_renamed_over_the_files_reaches_new_connections_only(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    serving: list[Served],
) -> None:
    cert, key, first = pair
    server = start(serving, table(tmp_path, upstream), cert, key)
    url = f"https://localhost:{server.port}/"
    with httpx.Client(verify=pki.client(), trust_env=False) as kept:
        before = kept.get(url)
        assert connection_der(before) == der(first)
        second = pki.issue("second")
        write_pair(cert, key, second)
        assert "CN=second" in server.log_line(r"strangler\.tls: loaded certificate .* on file")
        assert wait_for(lambda: served_der(pki, server.port) == der(second), ROTATION_TIMEOUT)
        # The open keep-alive connection goes on, with the certificate it was made with.
        after = kept.get(url)
        assert after.content == b"ok"
        assert connection_der(after) == der(first)
    with httpx.Client(verify=pki.client(), trust_env=False) as fresh:
        assert connection_der(fresh.get(url)) == der(second)


def secret_volume(mount: Path, issued: trustme.LeafCert, stamp: str) -> None:
    """What the kubelet does to a mounted Secret (or cert-manager's, through it): the files in a
    new timestamped directory, then a temporary ``..data`` link renamed over the old one."""
    data = mount / f"..{stamp}"
    data.mkdir(parents=True)
    cert_pem, key_pem = pem(issued)
    (data / "tls.crt").write_bytes(cert_pem)
    (data / "tls.key").write_bytes(key_pem)
    link = mount / "..data"
    old = os.readlink(link) if link.is_symlink() else None
    (mount / "..data_tmp").symlink_to(data.name)
    os.replace(mount / "..data_tmp", link)
    for name in ("tls.crt", "tls.key"):
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(mount / old)


def test_a_secrets_symlink_swap_rotates_with_sni_and_without(
    pki: PKI, tmp_path: Path, upstream: RawUpstream, serving: list[Served]
) -> None:
    mount = tmp_path / "secret"
    first = pki.issue("first")
    secret_volume(mount, first, "2026_11_27_06_00_00.000000001")
    server = start(serving, table(tmp_path, upstream), mount / "tls.crt", mount / "tls.key")
    assert served_der(pki, server.port, None) == der(first)
    second = pki.issue("second")
    secret_volume(mount, second, "2026_11_27_07_00_00.000000002")
    server.log_line(r"strangler\.tls: loaded certificate .* on file change")
    assert wait_for(lambda: served_der(pki, server.port, None) == der(second), ROTATION_TIMEOUT)
    assert served_der(pki, server.port, "localhost") == der(second)
    # A client connecting by IP address sends no server name: it gets the new one too.
    with httpx.Client(verify=pki.client(), trust_env=False) as client:
        reply = client.get(f"https://127.0.0.1:{server.port}/")
        assert reply.content == b"ok"
        assert connection_der(reply) == der(second)


def test_sighup_reloads_the_files(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    serving: list[Served],
) -> None:
    cert, key, first = pair
    server = start(serving, table(tmp_path, upstream), cert, key, "--no-watch")
    second = pki.issue("second")
    write_pair(cert, key, second)
    # --no-watch: the files alone change nothing (a second is several debounces).
    assert not wait_for(lambda: served_der(pki, server.port) != der(first), 1.0)
    server.process.proc.send_signal(signal.SIGHUP)
    server.log_line(r"strangler\.tls: loaded certificate .* on SIGHUP")
    assert served_der(pki, server.port) == der(second)
    assert server.process.proc.poll() is None


def test_a_bad_new_pair_is_rejected_and_the_old_one_keeps_serving(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    serving: list[Served],
) -> None:
    cert, key, first = pair
    server = start(serving, table(tmp_path, upstream), cert, key)
    # A key that is not the certificate's.
    replace(key, pki.issue("other").private_key_pem.bytes())
    line = server.log_line(r"strangler\.tls: rejected")
    assert "ERROR" in line
    assert f"{key}: the key is not the one of the certificate {cert}" in line
    assert "keeps serving" in line
    assert "CN=first" in line
    assert served_der(pki, server.port) == der(first)
    # A certificate cut short.
    cert_pem, key_pem = pem(pki.issue("cut"))
    replace(key, key_pem)
    replace(cert, cert_pem[: len(cert_pem) // 2])
    line = server.log_line(r"strangler\.tls: rejected .* a PEM block is not complete")
    assert str(cert) in line
    assert served_der(pki, server.port) == der(first)
    with httpx.Client(verify=pki.client(), trust_env=False) as client:
        assert client.get(f"https://localhost:{server.port}/").content == b"ok"
    # A good pair afterwards loads.
    third = pki.issue("third")
    write_pair(cert, key, third)
    server.log_line(r"strangler\.tls: loaded certificate .*CN=third")
    assert served_der(pki, server.port) == der(third)


# ---- a pair that cannot serve at start ----------------------------------------------------------


def run_serve(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "proxy", "serve", "-c", str(config)]
    args += ["--host", LOOPBACK, "--port", "0", "--admin-port", "0", *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRANGLER_TLS")}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_pair_that_does_not_load_at_start_exits_1(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    workers: str,
) -> None:
    cert, key, _ = pair
    config = table(tmp_path, upstream)
    replace(key, pki.issue("other").private_key_pem.bytes())
    result = run_serve(config, "--workers", workers, "--tls-cert", str(cert), "--tls-key", str(key))
    assert result.returncode == 1
    assert (
        f"strangler: cannot serve TLS: {key}: the key is not the one of the certificate {cert}\n"
        in result.stderr
    )
    assert "gateway" not in result.stderr  # never served
    missing = tmp_path / "missing.crt"
    result = run_serve(
        config, "--workers", workers, "--tls-cert", str(missing), "--tls-key", str(key)
    )
    assert result.returncode == 1
    assert f"cannot serve TLS: {missing}: cannot be read (No such file or directory)" in (
        result.stderr
    )


def test_one_flag_without_the_other_exits_1(
    tmp_path: Path, pair: tuple[Path, Path, trustme.LeafCert], upstream: RawUpstream
) -> None:
    cert, key, _ = pair
    config = table(tmp_path, upstream)
    result = run_serve(config, "--tls-cert", str(cert))
    assert result.returncode == 1
    assert "--tls-cert is given without --tls-key" in result.stderr
    result = run_serve(config, "--workers", "2", "--tls-key", str(key))
    assert result.returncode == 1
    assert "--tls-key is given without --tls-cert" in result.stderr


# ---- workers ----------------------------------------------------------------------------------


def test_every_worker_serves_tls_and_rotates(
    pki: PKI,
    tmp_path: Path,
    pair: tuple[Path, Path, trustme.LeafCert],
    upstream: RawUpstream,
    serving: list[Served],
) -> None:
    cert, key, first = pair
    server = start(serving, table(tmp_path, upstream), cert, key, "--workers", "2")
    with httpx.Client(verify=pki.client(), trust_env=False) as client:
        reply = client.get(f"https://localhost:{server.port}/")
        assert reply.content == b"ok"
        assert connection_der(reply) == der(first)
    second = pki.issue("second")
    write_pair(cert, key, second)
    for _ in range(2):  # one line per worker, each having read the files itself
        server.log_line(r"strangler\.tls: loaded certificate .*CN=second.* on file change")
    assert {served_der(pki, server.port) for _ in range(20)} == {der(second)}


# ---- the Kubernetes overlay ---------------------------------------------------------------------


def test_the_kubernetes_tls_overlay_mounts_the_secret_where_the_flags_point() -> None:
    kubectl = need("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/kubernetes-tls")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    documents: dict[str, Any] = {d["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}
    for kind in ("Deployment", "Service", "ConfigMap"):
        version = kubernetes_validate.latest_version()
        kubernetes_validate.validate(documents[kind], version, strict=True)
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    cert, key = Path(env["STRANGLER_TLS_CERT"]), Path(env["STRANGLER_TLS_KEY"])
    assert cert.parent == key.parent
    # The Secret's directory, never with subPath (a subPath mount is never updated), and
    # not inside the table's ConfigMap mount.
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(cert.parent)]
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    assert not str(cert.parent).startswith("/etc/strangler/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert (cert.name, key.name) == ("tls.crt", "tls.key")  # a kubernetes.io/tls Secret's keys
    # cert-manager's Certificate, when listed, writes the Secret the pods mount.
    certificate = yaml.safe_load((ROOT / "deploy/kubernetes-tls/certificate.yaml").read_text())
    assert certificate["kind"] == "Certificate"
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    # The probes stay on the plain admin port; the Service sends 443 to the TLS port.
    assert container["readinessProbe"]["httpGet"]["port"] == "admin"
    (port,) = documents["Service"]["spec"]["ports"]
    assert port["port"] == 443
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    # The base keeps working without a Secret: nothing of TLS in it.
    base = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    (base_container,) = base["spec"]["template"]["spec"]["containers"]
    assert not [e for e in base_container["env"] if e["name"].startswith("STRANGLER_TLS")]
    assert "secret" not in str(base["spec"]["template"]["spec"]["volumes"])
