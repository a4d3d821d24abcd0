"""Where the rollout controller reads and writes the table and its state (docs/rollout.md):
a file beside which the state file lies, or a Kubernetes ConfigMap holding both as keys.

Both give the round a :class:`Snapshot` with a version, and write only if nothing changed
since that version: a file's bytes are compared again before the rename; a ConfigMap is
``PUT`` with the ``resourceVersion`` it was read at, which the API server refuses (409) when
someone changed it in between. A refused write loses nothing: the next round judges what is
there now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from proxy.rollout.edit import write_atomically
from proxy.table.loader import digest

#: Where a pod's ServiceAccount token and the cluster's CA are mounted.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class StoreError(Exception):
    """The table cannot be read or written (not a conflict: an error to report)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: bytes
    #: The state's JSON, or None when there is none yet.
    state: bytes | None
    #: What a write must still find for it to happen.
    version: str


class Store(Protocol):
    #: The table's name in messages and in the loader's problems.
    name: str

    def read(self) -> Snapshot: ...

    def write(self, version: str, table: bytes | None, state: bytes) -> bool:
        """Write the table (unless None) and the state, if the store is still at
        ``version``; False when it is not (nothing written)."""


class FileStore:
    def __init__(self, table: Path, state: Path) -> None:
        self.table = table
        self.state = state
        self.name = str(table)

    def read(self) -> Snapshot:
        try:
            data = self.table.read_bytes()
            state = self.state.read_bytes() if self.state.exists() else None
        except OSError as exc:
            raise StoreError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return Snapshot(data, state, digest(data))

    def write(self, version: str, table: bytes | None, state: bytes) -> bool:
        if digest(self.table.read_bytes()) != version:
            return False  # a person saved it while the round judged
        if table is not None:
            write_atomically(self.table, table)
        write_atomically(self.state, state)
        return True


class ConfigMapStore:
    """A ConfigMap's key (the table) and the key beside it (``KEY.rollout.json``, the state),
    through the Kubernetes API, compare-and-swap by ``resourceVersion``."""

    def __init__(self, api: str, namespace: str, name: str, key: str, client: httpx.Client) -> None:
        self._url = f"{api.rstrip('/')}/api/v1/namespaces/{namespace}/configmaps/{name}"
        self._key = key
        self._client = client
        self._document: dict[str, Any] | None = None
        self.name = f"configmap {namespace}/{name} key {key}"

    @property
    def state_key(self) -> str:
        return f"{self._key}.rollout.json"

    def read(self) -> Snapshot:
        try:
            reply = self._client.get(self._url)
            reply.raise_for_status()
            document = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise StoreError(f"cannot read {self.name}: {exc}") from None
        data = document.get("data") or {}
        if self._key not in data:
            raise StoreError(f"{self.name}: the ConfigMap has no such key")
        self._document = document
        state = data.get(self.state_key)
        return Snapshot(
            data[self._key].encode("utf-8"),
            state.encode("utf-8") if state is not None else None,
            str(document["metadata"]["resourceVersion"]),
        )

    def write(self, version: str, table: bytes | None, state: bytes) -> bool:
        assert self._document is not None, "read() first"
        document = {**self._document, "data": dict(self._document.get("data") or {})}
        document["metadata"] = {**document["metadata"], "resourceVersion": version}
        if table is not None:
            document["data"][self._key] = table.decode("utf-8")
        document["data"][self.state_key] = state.decode("utf-8")
        try:
            reply = self._client.put(self._url, json=document)
        except httpx.HTTPError as exc:
            raise StoreError(f"cannot write {self.name}: {exc}") from None
        if reply.status_code == 409:
            return False
        if reply.is_error:
            raise StoreError(f"cannot write {self.name}: {reply.status_code} {reply.text[:200]}")
        return True


def in_cluster_client(api: str | None) -> tuple[str, httpx.Client]:
    """The API server's URL and a client for it: ``api`` as given (a test's, a proxy's), or
    the pod's own cluster, with its ServiceAccount token and CA."""
    if api is not None:
        return api, httpx.Client(timeout=10)
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not port:
        raise StoreError("not in a cluster (no KUBERNETES_SERVICE_HOST): give --kubernetes-api")
    token = (SERVICE_ACCOUNT / "token").read_text().strip()
    client = httpx.Client(
        timeout=10,
        verify=str(SERVICE_ACCOUNT / "ca.crt"),
        headers={"Authorization": f"Bearer {token}"},
    )
    bracketed = f"[{host}]" if ":" in host else host
    return f"https://{bracketed}:{port}", client
