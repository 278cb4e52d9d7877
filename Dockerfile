# The image hack/image.sh builds, for people who build with Docker. CI and releases use
# the script (no Docker engine); both assemble the root filesystem with the same code,
# `hack/image.sh --rootfs`, so the layout is the same: the stripped binary, the C runtime
# it links and Debian's CA certificates, nothing else, run as 65532:65532.
#
#   docker build -t regcred:dev --build-arg REGCRED_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .

# Debian bookworm, like the machine CI builds on: the copied C runtime matches the binary.
FROM docker.io/library/rust:1.95-bookworm AS build
# Empty: the commit comes from .git if the build context has it, else "unknown".
ARG REGCRED_GIT_COMMIT=
WORKDIR /src
COPY . .
RUN REGCRED_GIT_COMMIT="$REGCRED_GIT_COMMIT" hack/image.sh --rootfs /rootfs

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 8080/tcp 8081/tcp
ENTRYPOINT ["/usr/local/bin/regcred"]
CMD ["run"]
LABEL org.opencontainers.image.title="regcred" \
      org.opencontainers.image.source="https://github.com/regcred/regcred" \
      org.opencontainers.image.licenses="Apache-2.0"
