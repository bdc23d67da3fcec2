# syntax=docker/dockerfile:1

# Build: the release binary, without the test-only SurrealDB server.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features --bin authstore \
 && strip target/release/authstore

# Run: a slim image; the process runs as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin authstore \
 && mkdir -p /data && chown authstore:authstore /data
COPY --from=build /src/target/release/authstore /usr/local/bin/authstore
COPY deploy/entrypoint.sh /usr/local/bin/authstore-entrypoint
ENV AUTHSTORE_LISTEN=[::]:8750 \
    AUTHSTORE_DB=surrealkv:///data/authstore
VOLUME /data
EXPOSE 8750
ENTRYPOINT ["/usr/local/bin/authstore-entrypoint"]
CMD ["serve"]
