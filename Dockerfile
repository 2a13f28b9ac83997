# Small static images of the four binaries, each running as a non-root user:
#   docker build --target backend  -t hotel-booking/backend .
#   docker build --target frontend -t hotel-booking/frontend .
#   docker build --target notifier -t hotel-booking/notifier .
#   docker build --target sidecar  -t hotel-booking/sidecar .
# The build stage links against musl, so each image holds one static binary and nothing
# else (no shell, no libc). The toolchain is the one rust-toolchain.toml pins.
FROM rust:1.95.0-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p backend -p frontend -p notifier -p sidecar \
    && mkdir /out \
    && cp target/x86_64-unknown-linux-musl/release/backend \
          target/x86_64-unknown-linux-musl/release/frontend \
          target/x86_64-unknown-linux-musl/release/notifier \
          target/x86_64-unknown-linux-musl/release/sidecar /out/ \
    && mkdir -p /out/data && chown 65532:65532 /out/data

FROM scratch AS backend
COPY --from=build /out/backend /backend
USER 65532:65532
EXPOSE 5001
ENTRYPOINT ["/backend"]

FROM scratch AS frontend
COPY --from=build /out/frontend /frontend
USER 65532:65532
EXPOSE 5002
ENTRYPOINT ["/frontend"]

# The notifier keeps its events in /data/notifications.jsonl: mount a volume there (the
# folder belongs to the image's user, so a fresh volume takes its owner).
FROM scratch AS notifier
COPY --from=build /out/notifier /notifier
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
EXPOSE 5003
ENV NOTIFIER_INBOX=/data/notifications.jsonl
ENTRYPOINT ["/notifier"]

FROM scratch AS sidecar
COPY --from=build /out/sidecar /sidecar
USER 65532:65532
ENTRYPOINT ["/sidecar"]
