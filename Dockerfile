# etcd-cron: the `etcdcron` CLI, whose default command here is the Kubernetes operator.
#   docker build -t etcdcron:dev .
#   docker run --rm etcdcron:dev --help
# Multi-stage: the builder installs the project into a virtualenv at /opt/venv; the final image is
# python:3.11-slim plus that virtualenv, running as the unprivileged uid/gid 65532.
# DEV=1 (the Tiltfile sets it) leaves the installed etcdcron package writable by that user, so that
# Tilt's live update can sync source files into it.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# (pip precompiles the .pyc files: at run time the root filesystem is read-only.)
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in a layer of their own that only pyproject.toml invalidates: the project's
# dependencies plus its `operator` extra, if it has one.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p.get('dependencies', []) + p.get('optional-dependencies', {}).get('operator', [])))" \
        > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# Then the project itself (.dockerignore lets in only pyproject.toml, README.md and operator/).
COPY . .
RUN pip install --no-deps . \
    && etcdcron --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG DEV=0
LABEL org.opencontainers.image.title="etcd-cron" \
      org.opencontainers.image.description="A distributed, fault-tolerant cron over etcd, with a Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 65532 etcdcron \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin etcdcron
COPY --from=builder /opt/venv /opt/venv
RUN if [ "$DEV" = "1" ]; then \
        chown -R 65532:65532 "$(python -c 'import etcdcron, os; print(os.path.dirname(etcdcron.__file__))')"; \
    fi
USER 65532:65532
WORKDIR /tmp
# 9090: Prometheus metrics (ETCDCRON_METRICS_PORT); 8080: /healthz and /readyz (ETCDCRON_HEALTH_PORT).
EXPOSE 9090 8080
ENTRYPOINT ["etcdcron"]
CMD ["operator"]
