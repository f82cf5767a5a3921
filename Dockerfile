# One image with the exactly CLI and the order-pipeline programs.
#   docker build -t exactly-orders .
# docker-compose.yml runs each program from it; deploy/k8s uses it too.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Two modules: the library (with the CLI) at the root, the examples in examples/ (which replace
# the library with ../). Their dependencies are downloaded before the sources are copied, so a
# source change reuses this layer.
COPY go.mod go.sum ./
COPY examples/go.mod examples/go.sum ./examples/
RUN go mod download && cd examples && go mod download
COPY . .
# Static binaries: the runtime image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/exactly && \
	cd examples && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./orders/cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
# Each service sets its command: exactly, orders-api, relay,
# payments-worker, shipping-worker, loadgen, verify.
ENTRYPOINT []
