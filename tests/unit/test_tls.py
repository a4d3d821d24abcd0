"""The public port's TLS (proxy/tls.py), in process: a pair loads into a server context with
the gateway's settings; every kind of bad pair is refused with the file and the reason, and on
a reload the current pair stays; a reload that loads is what the next handshake gets, by SNI or
without it, and a rotated-away certificate is never offered again; the watcher picks up a pair
renamed into place. Handshakes run over memory buffers, with no socket."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

import pytest
import trustme
import watchfiles
from cryptography.hazmat.primitives import serialization

from proxy.asgi import Receive, Scope, Send
from proxy.server import Listener, server_config
from proxy.tls import ALPN, Certificates, TLSError, load_pair


class Files:
    """A certificate and key written where the gateway reads them, from a test CA."""

    def __init__(self, directory: Path) -> None:
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"

    def write(self, issued: trustme.LeafCert) -> trustme.LeafCert:
        self.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        self.key.write_bytes(issued.private_key_pem.bytes())
        return issued


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def issue(
    ca: trustme.CA, name: str, key_type: trustme.KeyType = trustme.KeyType.ECDSA
) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1", common_name=name, key_type=key_type)


def handshake(
    server: ssl.SSLContext,
    ca: trustme.CA,
    server_name: str | None,
    client: ssl.SSLContext | None = None,
) -> ssl.SSLObject:
    """A full handshake between ``server`` and a client trusting ``ca`` over memory buffers; the
    client's end. ``server_name`` None: no SNI at all, as a client connecting by IP."""
    if client is None:
        client = ssl.create_default_context()
        ca.configure_trust(client)
        client.set_alpn_protocols(["h2", "http/1.1"])
    # The chain is verified; which certificate it was, the tests compare byte for byte.
    client.check_hostname = False
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname=server_name)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client_end), ("server", server_end)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return client_end
    raise AssertionError("the handshake did not finish")


def served(
    certificates: Certificates, ca: trustme.CA, server_name: str | None = "localhost"
) -> bytes:
    """The DER of the certificate a new connection gets."""
    connection = handshake(certificates.listening, ca, server_name)
    return connection.getpeercert(binary_form=True) or b""


def started(files: Files) -> Certificates:
    return Certificates(str(files.cert), str(files.key))


def der(issued: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


# ---- loading ----------------------------------------------------------------------------------


def test_a_pair_loads_with_the_gateways_settings(files: Files, ca: trustme.CA) -> None:
    files.write(issue(ca, "one"))
    pair = load_pair(str(files.cert), str(files.key))
    assert pair.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert pair.context.options & ssl.OP_NO_RENEGOTIATION
    assert pair.context.verify_mode == ssl.CERT_NONE  # no client certificates asked for
    assert "CN=one" in pair.description
    assert "not after " in pair.description
    assert pair.not_after is not None
    connection = handshake(pair.context, ca, "localhost")
    assert connection.selected_alpn_protocol() == "http/1.1"
    assert list(ALPN) == ["http/1.1"]
    assert connection.version() in ("TLSv1.2", "TLSv1.3")


def test_an_rsa_pair_with_an_intermediate_serves_the_whole_chain(tmp_path: Path) -> None:
    root = trustme.CA()
    files = Files(tmp_path)
    issued = files.write(issue(root.create_child_ca(), "chained", trustme.KeyType.RSA))
    assert len(issued.cert_chain_pems) == 2
    pair = load_pair(str(files.cert), str(files.key))
    # The client trusts the root only: the intermediate must come from the server.
    client_end = handshake(pair.context, root, "localhost")
    assert client_end.getpeercert(binary_form=True) == der(issued)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not called")


def test_the_listener_and_uvicorn_config_carry_the_context(files: Files, ca: trustme.CA) -> None:
    files.write(issue(ca, "one"))
    certificates = Certificates(str(files.cert), str(files.key))
    listener = Listener("gateway", app, "127.0.0.1", 443, tls=certificates.listening)
    assert listener.tls is certificates.listening
    config = server_config(app, 1.0, tls=certificates.listening)
    assert config.ssl is certificates.listening
    plain = server_config(app, 1.0)
    plain.load()
    assert plain.ssl is None


# ---- refusing ---------------------------------------------------------------------------------


def encrypted_key(issued: trustme.LeafCert) -> bytes:
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def break_pair(files: Files, ca: trustme.CA, kind: str) -> None:
    """Make the pair on disk bad in the way ``kind`` names (a good one is there before)."""
    good = issue(ca, "broken")
    if kind == "mismatched key":
        files.write(good)
        files.key.write_bytes(issue(ca, "other").private_key_pem.bytes())
    elif kind == "garbage certificate":
        files.write(good)
        files.cert.write_bytes(b"this is not a certificate\n")
    elif kind == "garbage key":
        files.write(good)
        files.key.write_bytes(os.urandom(300))
    elif kind == "half-written certificate":
        files.write(good)
        text = files.cert.read_bytes()
        files.cert.write_bytes(text[: len(text) // 2])
    elif kind == "half-written key":
        files.write(good)
        text = files.key.read_bytes()
        files.key.write_bytes(text[: len(text) // 2])
    elif kind.startswith("bad base64"):
        files.write(good)
        path = files.cert if kind.endswith("certificate") else files.key
        lines = path.read_bytes().split(b"\n")
        lines[2] = b"!" * len(lines[2])
        path.write_bytes(b"\n".join(lines))
    elif kind == "missing key":
        files.write(good)
        files.key.unlink()
    elif kind == "missing certificate":
        files.write(good)
        files.cert.unlink()
    elif kind == "encrypted key":
        files.write(good)
        files.key.write_bytes(encrypted_key(good))
    elif kind == "key where the certificate goes":
        files.write(good)
        files.cert.write_bytes(good.private_key_pem.bytes())
    else:
        raise AssertionError(kind)


BAD = {
    "mismatched key": ("tls.key", "is not the one of the certificate"),
    "garbage certificate": ("tls.crt", "no PEM certificate in the file"),
    "garbage key": ("tls.key", "no PEM private key in the file"),
    "half-written certificate": ("tls.crt", "a PEM block is not complete"),
    "half-written key": ("tls.key", "a PEM block is not complete"),
    "bad base64 in the certificate": ("tls.crt", "not a valid PEM certificate chain (OpenSSL: "),
    "bad base64 in the key": ("tls.key", "not a valid PEM private key (OpenSSL: "),
    "missing key": ("tls.key", "cannot be read (No such file or directory)"),
    "missing certificate": ("tls.crt", "cannot be read (No such file or directory)"),
    "encrypted key": ("tls.key", "the key is encrypted"),
    "key where the certificate goes": ("tls.crt", "no PEM certificate"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_pair_is_refused_naming_the_file_and_why(
    files: Files, ca: trustme.CA, kind: str
) -> None:
    break_pair(files, ca, kind)
    name, reason = BAD[kind]
    with pytest.raises(TLSError) as raised:
        load_pair(str(files.cert), str(files.key))
    assert name in str(raised.value)
    assert reason in str(raised.value)


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_pair_on_reload_is_logged_and_the_current_one_stays(
    files: Files, ca: trustme.CA, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = files.write(issue(ca, "first"))
    certificates = started(files)
    before = certificates.current
    break_pair(files, ca, kind)
    with caplog.at_level(logging.INFO, logger="strangler.tls"):
        assert certificates.reload("SIGHUP") is False
    assert certificates.current is before
    assert served(certificates, ca) == der(first)
    (record,) = [r for r in caplog.records if r.name == "strangler.tls"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert str(files.cert) in message
    assert str(files.key) in message
    assert BAD[kind][1] in message
    assert "on SIGHUP" in message
    assert "keeps serving" in message
    assert "CN=first" in message


def test_a_bad_pair_at_start_is_an_error(files: Files, ca: trustme.CA) -> None:
    break_pair(files, ca, "mismatched key")
    with pytest.raises(TLSError, match="is not the one of the certificate"):
        Certificates(str(files.cert), str(files.key))


# ---- reloading --------------------------------------------------------------------------------


def test_a_reload_is_what_the_next_handshake_gets_with_sni_and_without(
    files: Files, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    first = files.write(issue(ca, "first"))
    certificates = started(files)
    listening = certificates.listening
    open_connection = handshake(listening, ca, "localhost")
    assert served(certificates, ca, "localhost") == der(first)
    assert served(certificates, ca, None) == der(first)
    second = files.write(issue(ca, "second"))
    with caplog.at_level(logging.INFO, logger="strangler.tls"):
        assert certificates.reload("file change") is True
    assert certificates.listening is listening  # the socket's context never changes
    assert served(certificates, ca, "localhost") == der(second)
    assert served(certificates, ca, None) == der(second)
    assert served(certificates, ca, "another.example") == der(second)  # one certificate for all
    # A connection made before keeps what it negotiated.
    assert open_connection.getpeercert(binary_form=True) == der(first)
    (record,) = [r for r in caplog.records if r.name == "strangler.tls"]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(f"loaded certificate {files.cert} with key {files.key}")
    assert "CN=second" in record.getMessage()
    assert record.getMessage().endswith("on file change")


def test_unchanged_files_are_not_reloaded(
    files: Files, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    files.write(issue(ca, "first"))
    certificates = started(files)
    before = certificates.current
    with caplog.at_level(logging.INFO, logger="strangler.tls"):
        assert certificates.reload("SIGHUP") is False
    assert certificates.current is before
    assert not [r for r in caplog.records if r.name == "strangler.tls"]


def test_after_a_rejection_a_good_pair_loads(files: Files, ca: trustme.CA) -> None:
    files.write(issue(ca, "first"))
    certificates = started(files)
    break_pair(files, ca, "half-written key")
    assert certificates.reload("file change") is False
    third = files.write(issue(ca, "third"))
    assert certificates.reload("file change") is True
    assert served(certificates, ca) == der(third)


def test_a_rotation_to_another_key_type_never_offers_the_old_certificate(
    files: Files, ca: trustme.CA
) -> None:
    # Loading a new pair into the live context would keep the old RSA certificate beside the
    # new ECDSA one (OpenSSL has a slot per key type), and a client that can only use RSA
    # would still get the old certificate. A whole new context has the new one only.
    rsa = files.write(issue(ca, "rsa", trustme.KeyType.RSA))
    certificates = started(files)
    rsa_only = ssl.create_default_context()
    ca.configure_trust(rsa_only)
    rsa_only.maximum_version = ssl.TLSVersion.TLSv1_2
    rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    connection = handshake(certificates.listening, ca, "localhost", rsa_only)
    assert connection.getpeercert(binary_form=True) == der(rsa)
    ecdsa = files.write(issue(ca, "ecdsa", trustme.KeyType.ECDSA))
    assert certificates.reload("SIGHUP") is True
    assert served(certificates, ca) == der(ecdsa)
    with pytest.raises(ssl.SSLError):
        handshake(certificates.listening, ca, "localhost", rsa_only)


def test_the_watcher_looks_at_the_pairs_names_and_a_secrets_data_link(
    files: Files, ca: trustme.CA
) -> None:
    files.write(issue(ca, "first"))
    certificates = started(files)
    concerns = certificates._concerns_pair
    directory = files.cert.parent
    assert concerns(watchfiles.Change.modified, str(directory / "tls.crt"))
    assert concerns(watchfiles.Change.added, str(directory / "tls.key"))
    assert concerns(watchfiles.Change.added, str(directory / "..data"))
    assert concerns(watchfiles.Change.added, str(directory / "..data_tmp"))
    assert not concerns(watchfiles.Change.added, str(directory / ".tls.crt.swp"))
    assert not concerns(watchfiles.Change.added, str(directory / "routes.yaml"))


@pytest.mark.anyio
async def test_the_watcher_reloads_a_renamed_pair_and_stops_on_aclose(
    files: Files, ca: trustme.CA
) -> None:
    files.write(issue(ca, "first"))
    certificates = started(files)
    certificates.start()
    try:
        await asyncio.sleep(0.2)  # the watch is set up
        staged = Files(files.cert.parent / "staged")
        staged.cert.parent.mkdir()
        second = staged.write(issue(ca, "second"))
        os.replace(staged.key, files.key)
        os.replace(staged.cert, files.cert)
        for _ in range(200):
            if served(certificates, ca) == der(second):
                break
            await asyncio.sleep(0.05)
        assert served(certificates, ca) == der(second)
    finally:
        await asyncio.wait_for(certificates.aclose(), 10)
