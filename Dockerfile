# syntax=docker/dockerfile:1
#
# The pequod-operator image:   docker build -t pequod-operator .
#
# Every RUN below is a step that `cargo xtask test` (CI) also runs, with the same arguments
# but the dev profile: `cargo xtask dist guest|operator|rootfs|check` (xtask/src/dist.rs) and the
# guest's build script that `dist guest` calls. A test in xtask/src/dist.rs parses this file
# and fails if a RUN is anything else, or if the final stage stops being distroless and nonroot.
# Bookworm stages: the binary must not ask for a newer glibc than the Debian 12 base has.

# Go stage: the CUE guest (Go -> wasip1), by the script `cargo xtask dist guest` runs.
FROM golang:1.26-bookworm AS guest
WORKDIR /src
COPY crates/cue/guest/ crates/cue/guest/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    bash crates/cue/guest/build.sh /out/cue-guest.wasm

# Rust stage: the operator around the prebuilt guest (PEQUOD_CUE_GUEST_WASM: no Go needed),
# then the final image's file tree, then that tree checked (the binary runs from it as 65532).
FROM rust:1.95-bookworm AS operator
WORKDIR /src
COPY . .
COPY --from=guest /out/cue-guest.wasm /out/guest/cue-guest.wasm
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo xtask dist operator --guest /out/guest/cue-guest.wasm --out /out/bin --profile release
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo xtask dist rootfs --from /out/bin --out /rootfs
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo xtask dist check --rootfs /rootfs

# Final stage: glibc, libgcc, CA certificates and tzdata from distroless; the rest from /rootfs
# (binary, passwd/group, the libraries the base lacks, the cache mount point owned by nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=operator /rootfs/usr/ /usr/
COPY --from=operator /rootfs/etc/ /etc/
COPY --from=operator --chown=65532:65532 /rootfs/var/cache/pequod/ /var/cache/pequod/
# Both caches (precompiled CUE guest, fetched modules) under one mount point; mount an emptyDir
# there with a read-only root filesystem. Probes and /metrics need a non-loopback address.
# The guest precompiled at build time (/usr/share/pequod/cue) spares each pod the compile when
# the node's CPU runs it; otherwise the pod compiles into the cache as before.
ENV PEQUOD_CACHE_DIR=/var/cache/pequod \
    PEQUOD_CUE_SEED_DIR=/usr/share/pequod/cue \
    PEQUOD_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pequod-operator"]
