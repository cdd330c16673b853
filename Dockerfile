# One image for every role: the binary picks its role from its arguments
# (`lethe edge`, `lethe worker transcribe`, ...), so Cloud Run runs the same
# image with a different command per service (terraform/services.tf).
#
# Production transcribes with a hosted recogniser (LETHE_STT=deepgram or
# openai): PocketSphinx is an external program run as a subprocess, and
# this image has neither it nor a shell, so the offline recogniser is for
# `make run` on a developer's machine only.
#
# internal/dockerfile's test checks what this file must keep: a static
# CGO-free, trimmed build; a distroless base; user 65532; no shell; no
# ADD of remote URLs.

# The release Go: go1.26.8's standard library has reachable vulnerabilities
# fixed in go1.27.3 (scripts/supply-chain.sh scans with this same version).
ARG GO_VERSION=1.27.3

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so a source change reuses the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: the SQLite driver is pure Go (modernc.org/sqlite) and
# nothing else needs cgo, so the binary runs on distroless/static.
# -trimpath: no build-machine paths in the binary.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w -buildid= -X main.version=${VERSION}" -o /out/lethe ./cmd/lethe

# static-debian12:nonroot: CA certificates, tzdata and /etc/passwd with the
# nonroot user; no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/lethe /usr/local/bin/lethe
# Cloud Run's filesystem is in memory; the data dir holds only the local
# token issuer's key, which production does not trust (LETHE_AUTH=firebase).
ENV LETHE_ENV=production \
    LETHE_STT=deepgram \
    LETHE_DATA_DIR=/tmp/lethe
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lethe"]
CMD ["edge"]
