# Multi-stage build: compile in the Rust image, run in a slim Debian with only the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY parsers parsers
COPY benches benches
RUN cargo build --release --locked --bin lm-ingest

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lm-ingest /usr/local/bin/lm-ingest
ENV LM_INGEST__SERVER__LISTEN=0.0.0.0:8080 \
    LM_INGEST__STORE__PATH=/data/lm-ingest.db
# fly.io mounts volumes owned by root, so the process runs as root inside its own VM; elsewhere,
# mount /data writable for the user you choose with --user.
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["lm-ingest"]
CMD ["serve"]
