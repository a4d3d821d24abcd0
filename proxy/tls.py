"""The public port's TLS (docs/deploy.md, "TLS"): the server context made from a certificate
chain and its key (PEM files), and how a rotated pair reaches new connections.

The listening socket's SSLContext is fixed when uvicorn creates the server, so it is never
reloaded. Its ``sni_callback``, which OpenSSL runs on every ClientHello, with the name the
client sent or with None (a client connecting by IP address sends none), hands the new
connection the current context (``ssl_object.context = current``). A reload builds a whole new
context from the files, apart from the live one; only a pair that loaded (both files complete,
the key the certificate's) replaces the current context, by one assignment on the event loop,
the thread every handshake runs on. A handshake already past its ClientHello, and every open
connection, keep the certificate they got. Loading the new pair into the live context was the
alternative, rejected: a failed load can leave a context half-updated, and OpenSSL keeps one
certificate per key type, so after a rotation from an RSA to an ECDSA key the old RSA
certificate would go on being served to clients that pick RSA (tests/unit/test_tls.py).

Reloads come from SIGHUP (proxy/cli.py) and from watching the directories of both files, as the
routing table's is watched (proxy/reloader.py). This module knows nothing of the routing table
or the admin port, which stays plain HTTP.
"""

from __future__ import annotations

import _ssl
import asyncio
import hashlib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import watchfiles

from proxy.timefmt import iso_time

log = logging.getLogger("strangler.tls")

#: HTTP/1.1 only: the gateway speaks nothing else, so it offers nothing else.
ALPN = ("http/1.1",)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: A burst of file events (cert-manager's swap of a Secret's ``..data`` link, an editor's save,
#: a certificate written before its key) is taken as one change once the directories have been
#: quiet this long.
DEBOUNCE_MS = 300

_BLOCK = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]+)-----")
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


class TLSError(Exception):
    """A certificate and key that cannot be served; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate chain and key that loaded, as a server context ready for connections."""

    context: ssl.SSLContext
    #: Of both files' bytes: a reload that finds the same bytes changes nothing.
    digest: str
    #: The leaf certificate for the log: subject, serial and expiry.
    description: str
    #: Unix time after which the leaf is expired; None when it could not be read.
    not_after: float | None


def load_pair(cert: str, key: str) -> Pair:
    """A fresh server context with ``cert`` (the chain, leaf first) and ``key``; TLSError when
    a file is missing, incomplete or not PEM, the key is encrypted or not the certificate's."""
    cert_bytes, key_bytes = _read(cert), _read(key)
    # What OpenSSL would only call a "PEM lib" error is said plainly first.
    _check_blocks(cert, cert_bytes, "CERTIFICATE", "PEM certificate")
    _check_blocks(key, key_bytes, "PRIVATE KEY", "PEM private key")
    if b"ENCRYPTED PRIVATE KEY-----" in key_bytes or b"Proc-Type: 4,ENCRYPTED" in key_bytes:
        raise TLSError(f"{key}: the key is encrypted (an unencrypted PEM key is needed)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_VERSION
    # Client-initiated renegotiation (TLS 1.2) costs the server a handshake for nothing.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN))
    try:
        # A password callback, so that OpenSSL never prompts on a terminal for one.
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSError(f"{key}: the key is not the one of the certificate {cert}") from exc
        culprit = f"{cert}: not a valid PEM certificate chain"
        if _certificates_parse(cert_bytes):
            culprit = f"{key}: not a valid PEM private key"
        raise TLSError(f"{culprit} (OpenSSL: {exc.reason or exc})") from exc
    except TLSError as exc:  # from _no_password: an encrypted key in a form not caught above
        raise TLSError(f"{key}: {exc}") from None
    except OSError as exc:  # a file replaced or removed since it was read
        raise TLSError(f"{cert}, {key}: cannot be read ({exc.strerror or exc})") from exc
    digest = hashlib.sha256(cert_bytes + b"\0" + key_bytes).hexdigest()
    description, not_after = _describe(cert)
    return Pair(context, digest, description, not_after)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise TLSError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _check_blocks(path: str, data: bytes, label: str, what: str) -> None:
    blocks = _BLOCK.findall(data)
    if not any(kind == b"BEGIN" and name.endswith(label.encode()) for kind, name in blocks):
        raise TLSError(f"{path}: no {what} in the file")
    # BEGIN and END alternate, each pair with one label; anything else was cut short.
    pairs = zip(blocks[::2], blocks[1::2], strict=False)
    if len(blocks) % 2 or any(b[0] != b"BEGIN" or e[0] != b"END" or b[1] != e[1] for b, e in pairs):
        raise TLSError(f"{path}: a PEM block is not complete (a file half-written?)")


def _certificates_parse(data: bytes) -> bool:
    """Whether every certificate in ``data`` parses, to say which file OpenSSL's error is
    about."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError):
        return False
    return True


def _no_password() -> bytes:
    raise TLSError("the key is encrypted (an unencrypted PEM key is needed)")


def _describe(cert: str) -> tuple[str, float | None]:
    """The leaf's subject, serial and expiry, read by the ssl module's own decoder. It is not
    public API: without it the log names the file only."""
    decode: Callable[[str], dict[str, Any]] | None = getattr(_ssl, "_test_decode_cert", None)
    try:
        decoded = decode(cert) if decode is not None else None
    except (ssl.SSLError, OSError, ValueError):
        decoded = None
    if not decoded:
        return "", None
    subject = ", ".join(
        f"{_SHORT_NAMES.get(name, name)}={value}"
        for rdn in decoded["subject"]
        for name, value in rdn
    )
    not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    return (
        f"subject {subject or '(empty)'}, serial {decoded['serialNumber']}, "
        f"not after {iso_time(not_after)}",
        not_after,
    )


class Certificates:
    """The public port's certificate: the context the port listens with, the pair that new
    connections get, and its reloads."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        # The directories as named, not resolved: a Secret mounts each file as a symlink into a
        # hidden directory that is replaced on every update.
        self._directories = sorted({os.path.dirname(os.path.abspath(p)) for p in (cert, key)})
        self._names = {os.path.basename(cert), os.path.basename(key)}
        self._current = load_pair(cert, key)  # a bad pair at start: TLSError, to the caller
        #: What uvicorn listens with; its callback gives each new connection the current pair.
        self.listening = self._current.context
        self.listening.sni_callback = self._select
        self._stop = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._loaded("at start")

    @property
    def current(self) -> Pair:
        return self._current

    def _select(
        self, connection: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, _: object
    ) -> None:
        # Whatever name was asked for, or none: one certificate serves them all.
        connection.context = self._current.context

    def reload(self, trigger: str) -> bool:
        """Read both files again; a pair that loads serves new connections from now on (True),
        one that does not is logged and the current one stays (False)."""
        try:
            pair = load_pair(self.cert, self.key)
        except TLSError as exc:
            kept = self._current.description
            log.error(
                "rejected %s and %s on %s: %s; the certificate loaded before keeps serving%s",
                self.cert,
                self.key,
                trigger,
                exc,
                f" ({kept})" if kept else "",
            )
            return False
        if pair.digest == self._current.digest:
            log.debug("%s and %s unchanged on %s", self.cert, self.key, trigger)
            return False
        self._current = pair  # the swap: the next ClientHello gets it
        self._loaded(f"on {trigger}")
        return True

    def _loaded(self, when: str) -> None:
        pair = self._current
        details = f" ({pair.description})" if pair.description else ""
        log.info("loaded certificate %s with key %s%s %s", self.cert, self.key, details, when)
        if pair.not_after is not None and pair.not_after < time.time():
            log.warning("the certificate %s has expired: clients will refuse it", self.cert)

    def start(self) -> None:
        """Watch the files' directories (in the running loop) until :meth:`aclose`."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        try:
            async for _ in watchfiles.awatch(
                *self._directories,
                watch_filter=self._concerns_pair,
                debounce=DEBOUNCE_MS,
                step=50,
                stop_event=self._stop,
                recursive=False,
            ):
                self.reload("file change")
        except Exception as exc:  # a directory removed, say: serving goes on, SIGHUP reloads
            log.error("stopped watching %s: %s", ", ".join(self._directories), exc)

    def _concerns_pair(self, change: watchfiles.Change, path: str) -> bool:
        """Events on the files' own names (edits, renames over them) and on a Secret's
        ``..data`` link; other files in the directories are not."""
        name = os.path.basename(path)
        return name in self._names or name.startswith("..data")

    async def aclose(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            await self._watcher
            self._watcher = None
