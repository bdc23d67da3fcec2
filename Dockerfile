# syntax=docker/dockerfile:1

# Build: the release binary only (the test-only SurrealDB server is a dev-dependency and is not
# compiled here). The registry and the target directory are BuildKit cache mounts, so a change
# to src/ recompiles authstore alone; SurrealDB and the other dependencies stay compiled on the
# builder between deploys.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin authstore \
 && strip -o /authstore target/release/authstore

# Run: a slim image; the process runs as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin authstore \
 && mkdir -p /data && chown authstore:authstore /data
COPY --from=build /authstore /usr/local/bin/authstore
COPY deploy/entrypoint.sh /usr/local/bin/authstore-entrypoint
ENV AUTHSTORE_LISTEN=[::]:8750 \
    AUTHSTORE_DB=surrealkv:///data/authstore
VOLUME /data
EXPOSE 8750
ENTRYPOINT ["/usr/local/bin/authstore-entrypoint"]
CMD ["serve"]
