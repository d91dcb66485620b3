# gregor container images.
#
#   docker build -t gregor-relay .                          # gregor-relay + the gregor CLI (default)
#   docker build --target examples -t gregor-examples .     # order-service + shipping-service
#
# There is no Docker on the CI machine: hadolint lints this file (tests/dockerfile_lint.rs,
# ignore list in .hadolint.yaml) and tests/image_contract.rs holds it to the repository — a
# numeric non-root USER, EXPOSE and the HEALTHCHECK on GREGOR_RELAY_HTTP_ADDR's port (the
# check runs verbatim against a live relay), the runtime packages the binaries' libraries
# need, and a .dockerignore that keeps every build input. See docs/adr/0008-packaging.md and
# docs/adr/0014-test-machinery-tools.md.

# The toolchain of rust-toolchain.toml; the runtime is the same Debian release, so the
# binaries find the shared libraries they were linked against.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build ----------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
# librdkafka is built from source by rdkafka-sys (./configure && make: C and C++), linked
# against the system zlib and, for TLS and SASL, OpenSSL (the `ssl` feature); rust:slim has
# gcc and libc6-dev only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CARGO_TARGET_DIR=/src/target
COPY . .
RUN cargo build --release --locked -p gregor-relay -p gregor-cli \
 && install -D -m 0755 -t /out "$CARGO_TARGET_DIR/release/gregor-relay" "$CARGO_TARGET_DIR/release/gregor"

FROM builder AS examples-builder
RUN cargo build --release --locked -p order-service -p shipping-service \
 && install -D -m 0755 -t /out "$CARGO_TARGET_DIR/release/order-service" "$CARGO_TARGET_DIR/release/shipping-service"

# ---- runtime --------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# Only what the binaries load at run time besides libc, libgcc and zlib (already in the base):
# OpenSSL for librdkafka's TLS, and the CA bundle for TLS to the broker, PostgreSQL, the
# schema registry and the OTLP collector. No shell tools are added: the health check below
# speaks HTTP with bash alone.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 gregor \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gregor

# The example services of ./scripts/demo, for docker-compose.yml (the command picks one).
FROM runtime AS examples
COPY --from=examples-builder /out/order-service /out/shipping-service /usr/local/bin/
USER 10001:10001
EXPOSE 8080 9465
CMD ["shipping-service"]

# gregor-relay (the entry point) and the gregor operator CLI (`docker run --entrypoint gregor`).
FROM runtime AS relay
COPY --from=builder /out/gregor-relay /out/gregor /usr/local/bin/
USER 10001:10001
# GREGOR_RELAY_HTTP_ADDR's default: /healthz, /readyz, /metrics.
EXPOSE 9464
# GET /healthz on the port of GREGOR_RELAY_HTTP_ADDR, with bash's /dev/tcp (no curl in the
# image); healthy on "HTTP/1.x 200". With GREGOR_RELAY_HTTP_ADDR=off there is nothing to ask:
# override the check (`--no-healthcheck`, or `healthcheck: disable: true` in compose).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "addr=${GREGOR_RELAY_HTTP_ADDR:-0.0.0.0:9464}; exec 3<>/dev/tcp/127.0.0.1/${addr##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["gregor-relay"]
