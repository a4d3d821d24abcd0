# strangler: the gateway image. docs/deploy.md explains running, mounting and scaling it.
#   docker build -t strangler .
#   docker run -p 8080:8080 -v "$PWD/config:/etc/strangler:ro" strangler
# The routing table is read from /etc/strangler/routes.yaml and watched: mount the directory
# (a ConfigMap in Kubernetes, never with subPath) and edits apply live.
# The admin port (9901) listens on all interfaces inside the container so that health checks
# and Prometheus can reach it; publish only 8080 to the outside world.
# TLS on 8080 (docs/deploy.md, "TLS"): mount the certificate's directory (a Kubernetes Secret,
# never with subPath) and point the gateway at its files; they are reloaded when they change:
#   docker run -p 8443:8080 -v "$PWD/config:/etc/strangler:ro" -v "$PWD/tls:/etc/strangler-tls:ro" \
#     -e STRANGLER_TLS_CERT=/etc/strangler-tls/tls.crt -e STRANGLER_TLS_KEY=/etc/strangler-tls/tls.key \
#     strangler
# Without them the port is plain HTTP: no certificate is baked into the image.
# tests/integration/test_image.py runs this file's ENTRYPOINT and HEALTHCHECK against the wheel
# built here, without Docker; hadolint checks it in `make test`.

# Build: the project and every dependency as wheels, so the runtime stage installs offline.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY legacy_monolith ./legacy_monolith
COPY new_services ./new_services
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime: no compilers, no source tree, not root.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STRANGLER_CONFIG=/etc/strangler/routes.yaml \
    STRANGLER_HOST=0.0.0.0 \
    STRANGLER_PORT=8080 \
    STRANGLER_ADMIN_HOST=0.0.0.0 \
    STRANGLER_ADMIN_PORT=9901
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/strangler-*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin strangler
# The default table sends everything to a monolith at 127.0.0.1:8081: replace it by mounting
# your own over /etc/strangler.
COPY config/routes.yaml /etc/strangler/routes.yaml
USER 10001:10001
# The working directory stays /, which only root can write: it is on the import path for
# function handlers named in the table.
EXPOSE 8080 9901
# Ready: a table is loaded and the gateway is not draining. Python's own HTTP client, so the
# image needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('STRANGLER_ADMIN_PORT', '9901'), timeout=2)"]
# SIGTERM drains: /readyz turns 503 at once, new requests are served for --shutdown-grace
# (5 s), requests in flight get --drain-timeout (30 s), then the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["strangler", "serve"]
