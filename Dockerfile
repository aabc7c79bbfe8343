# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in slim Debian as a non-root user.
# The binary applies its own migrations at start-up (under an advisory lock).

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY migrations migrations
COPY src src
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin companion

FROM debian:bookworm-slim AS runtime
# The PostgreSQL client tools (pg_dump, pg_restore, psql) are for `companion admin backup`
# and `restore`. pg_dump must be at least the server's major version, so they come from the
# PostgreSQL project's own apt repository (set up by Debian's postgresql-common), newest.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && apt-get install -y --no-install-recommends postgresql-client-17 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin companion
WORKDIR /app
COPY --from=build /src/target/release/companion /usr/local/bin/companion
COPY config config
COPY static static
# Local object storage (storage.url defaults to file://data/objects); mount a volume here.
RUN mkdir -p /app/data && chown companion /app/data
USER companion

ENV COMPANION_ENV=production \
    PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" || exit 1
ENTRYPOINT ["companion"]
CMD ["serve"]
