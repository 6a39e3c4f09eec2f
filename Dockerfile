# syntax=docker/dockerfile:1
# Kedai: one image, configured by environment (KEDAI__SECTION__KEY) and an
# optional profile file (KEDAI_PROFILE=production reads config/production.toml).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Build dependencies first so that source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY migrations/Cargo.toml migrations/Cargo.toml
RUN mkdir -p src migrations/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs migrations/src/lib.rs \
    && cargo build --release --locked --bin kedai || true
COPY . .
RUN touch src/main.rs src/lib.rs migrations/src/lib.rs \
    && cargo build --release --locked --bin kedai \
    && strip target/release/kedai

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin kedai \
    && mkdir -p /app/data /app/config \
    && chown -R kedai:kedai /app
WORKDIR /app
COPY --from=build /src/target/release/kedai /usr/local/bin/kedai
COPY config/ /app/config/
USER kedai
ENV KEDAI__SERVER__BIND=0.0.0.0:8080 \
    KEDAI__LOG__FORMAT=json
EXPOSE 8080
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kedai"]
CMD ["serve"]
