# One image for every Mamoru service; the command picks the service:
#   python -m services.identity            serve (likewise wallet, risk, notify)
#   python -m services.identity migrate    apply the migrations and exit (for a Job)
# Build: docker build -t mamoru:dev .   (or podman build -t mamoru:dev .)
# For reproducible builds pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Code generation (the `make protos` step) with the pinned protoc plugin, in a
# venv of its own so that grpcio-tools never reaches the runtime image.
COPY requirements.txt ./
RUN python -m venv /opt/protoc \
    && /opt/protoc/bin/pip install --no-cache-dir -c requirements.txt grpcio-tools
COPY protos ./protos
RUN mkdir gen \
    && find protos -name '*.proto' -print0 \
       | xargs -0 /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos \
           --python_out=gen --grpc_python_out=gen \
    && find gen/mamoru gen/buf -type d -exec touch {}/__init__.py \;

# Runtime dependencies: every pin of requirements.txt except the tools listed
# in not-in-image.txt, without resolving anything else; pip check then proves
# the set is closed.
COPY deploy/image/runtime_requirements.py deploy/image/not-in-image.txt ./
RUN python runtime_requirements.py requirements.txt not-in-image.txt > runtime.txt \
    && python -m venv /opt/mamoru \
    && /opt/mamoru/bin/pip install --no-cache-dir --no-deps -r runtime.txt \
    && /opt/mamoru/bin/pip check

COPY services ./services
# Bytecode compiled now, checked by hash: the root filesystem is read-only at run time.
RUN /opt/mamoru/bin/python -m compileall -q --invalidation-mode unchecked-hash services gen

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 mamoru \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mamoru
ENV PATH=/opt/mamoru/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    LOG_FORMAT=json \
    MAMORU_TLS_DIR=/etc/mamoru/tls
WORKDIR /app
COPY --from=builder /opt/mamoru /opt/mamoru
COPY --from=builder /src/gen ./gen
COPY --from=builder /src/services ./services
USER 10001:10001
# mTLS gRPC, plaintext health-only and metrics ports: each service uses its own of each.
EXPOSE 50051 50052 50053 50054 50061 50062 50063 50064 9461 9462 9463 9464
CMD ["python", "-m", "services.identity"]
