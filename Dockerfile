# syntax=docker/dockerfile:1
# keyward in a container: built from this checkout with the locked
# dependencies, run as a non-root user on a distroless base (no shell, no
# package manager). No secret is baked in: the root key and the database URL
# come at run time (see deploy/compose.yaml and docs/deployment.md).
#
#   docker build -t keyward .
#   docker run --rm keyward --version

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p keyward \
 && install -D -m 0755 target/release/keyward /out/bin/keyward
# The man pages and completions, generated from the binary's own CLI
# definition, and the (empty) data directory the runtime user owns.
RUN /out/bin/keyward man --out /out/share/man/man1 > /dev/null \
 && mkdir -p /out/share/bash-completion/completions /out/data \
 && /out/bin/keyward completions bash > /out/share/bash-completion/completions/keyward

# glibc and libgcc only (what the binary links); nonroot is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/bin/keyward /usr/local/bin/keyward
COPY --from=build /out/share/ /usr/local/share/
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/keyward/
USER 65532:65532
ENV KEYWARD_DATA_DIR=/var/lib/keyward \
    KEYWARD_LISTEN=0.0.0.0:8080
WORKDIR /var/lib/keyward
VOLUME ["/var/lib/keyward"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["serve"]
