# strangler: the gateway image. Mount your routing table at /etc/strangler/routes.yaml.
#   docker build -t strangler .
#   docker run -p 8080:8080 -v "$PWD/config:/etc/strangler:ro" strangler
# The admin port (9901) listens on all interfaces inside the container so that health checks
# and Prometheus can reach it; publish only 8080 to the outside world.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY legacy_monolith ./legacy_monolith
COPY new_services ./new_services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STRANGLER_CONFIG=/etc/strangler/routes.yaml \
    STRANGLER_ADMIN_HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/routes.yaml /etc/strangler/routes.yaml
USER 65534:65534
EXPOSE 8080 9901
ENTRYPOINT ["strangler", "serve"]
