# Builds the tailsift command into a small image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tailsift ./cmd/tailsift

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tailsift /usr/local/bin/tailsift
ENTRYPOINT ["/usr/local/bin/tailsift"]
