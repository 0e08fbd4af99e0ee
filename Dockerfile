# Usher in a container: built in one stage, run from a small one.
#   docker build -t usher .
#   docker run -p 8080:8080 usher            # embedded SQLite in /var/lib/usher
# For several instances behind a load balancer, see docker-compose.yml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The dependencies first, so that a change to Usher's code does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY .cargo .cargo
RUN cargo build --release --locked -p usher && strip target/release/usher

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/usher usher
COPY --from=build /src/target/release/usher /usr/local/bin/usher
USER usher
WORKDIR /var/lib/usher
ENV USHER_ADDR=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///var/lib/usher/usher.db \
    USHER_MAIL_DIR=/var/lib/usher/mail \
    USHER_LOG_FORMAT=json
EXPOSE 8080
# Health: GET /healthz (process up) and /readyz (database reachable, migrations current).
ENTRYPOINT ["usher"]
CMD ["serve"]
