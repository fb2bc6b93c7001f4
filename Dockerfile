# syntax=docker/dockerfile:1
#
# sigv4-sidecar container image: a glibc release build of the binary on distroless/cc, non-root.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/example/sigv4-sidecar:0.1.0 --push .
#
# Multi-arch without emulation: the build stages run on the build machine's own platform
# ($BUILDPLATFORM) and cross-compile for $TARGETARCH (x86_64- or aarch64-unknown-linux-gnu) with
# rustup's target std and Debian's cross gcc (ring has C and assembly parts); only the final
# stage is of the target platform. A build for the machine's own architecture needs no cross
# tools and no download beyond the base images and crates.
#
# Base images are pinned by tag. Pin them by digest as well (FROM name:tag@sha256:...) in the
# pipeline that publishes the image (e.g. Renovate, or `docker buildx imagetools inspect`):
# digests could not be resolved where this file was written, which has no registry access.
#
# The builder must be Debian 12 (bookworm) like the runtime, so the binary never needs a newer
# glibc than distroless/cc-debian12 ships. TLS trust roots are compiled into the binary
# (webpki-roots), so the runtime needs no CA bundle.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

# ---- chef: Rust toolchain + cargo-chef, on the build machine's platform -----------------------
FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# ---- planner: the dependency recipe (changes only when manifests or Cargo.lock change) --------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder: cross toolchain, dependencies (cached layer), then the binary ------------------
FROM chef AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Cross compilers come from the base image's Debian suite; their exact versions follow its
# security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN case "${TARGETARCH}" in \
      amd64) triple=x86_64-unknown-linux-gnu; cross_pkgs=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;; \
      arm64) triple=aarch64-unknown-linux-gnu; cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;; \
      *) echo "unsupported TARGETARCH '${TARGETARCH}' (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
    && echo "${triple}" > /rust-target \
    && if [ "$(dpkg --print-architecture)" != "${TARGETARCH}" ]; then \
         apt-get update \
         && apt-get install -y --no-install-recommends "${cross_pkgs[@]}" \
         && rm -rf /var/lib/apt/lists/*; \
       fi \
    && rustup target add "${triple}"
# Linkers and C compilers per target triple (native ones exist as <triple>-gcc too).
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    AR_x86_64_unknown_linux_gnu=x86_64-linux-gnu-ar \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p sigv4-sidecar --target "$(cat /rust-target)" --recipe-path recipe.json
COPY . .
# The same cargo command as CI's release build (plus --target for the cross build). The release
# profile strips symbols (fat LTO, one codegen unit: Cargo.toml); for a crash report or a
# profile, build `--profile profiling` from the same revision: same code, with symbols.
RUN cargo build --release --locked -p sigv4-sidecar --target "$(cat /rust-target)" \
    && cp "target/$(cat /rust-target)/release/sigv4-sidecar" /sigv4-sidecar
# Smoke test where the binary can run (a native, non-cross build).
RUN if [ "$(dpkg --print-architecture)" = "${TARGETARCH}" ]; then /sigv4-sidecar --version; fi

# ---- runtime: distroless/cc (glibc, libgcc, no shell), the target platform --------------------
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sigv4-sidecar" \
      org.opencontainers.image.description="Signs HTTP requests with AWS SigV4 and forwards them to an IAM-protected upstream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/example/sigv4-sidecar" \
      org.opencontainers.image.url="https://github.com/example/sigv4-sidecar" \
      org.opencontainers.image.documentation="https://github.com/example/sigv4-sidecar#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /sigv4-sidecar /sigv4-sidecar
USER 65532:65532
# 8080: proxy (loopback by default, see `listen`); 9090: admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/sigv4-sidecar"]
