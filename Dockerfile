# rackboot in a container. It needs the host's network (DHCP broadcasts, TFTP, HTTP on the
# provisioning LAN): see compose.yaml for the user, capability and volumes, and README.md
# "Running in a container".
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 builds a native addon when no prebuilt binary matches.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY schema ./schema
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
# Stock iPXE binaries for `rackboot fetch ipxe` (the compose `fetch` service), gpgv for `fetch coreos
# --keyring`, and setcap for the line after.
RUN apt-get update && apt-get install -y --no-install-recommends ipxe ca-certificates gpgv libcap2-bin && rm -rf /var/lib/apt/lists/*
# rackboot runs as a non-root user (compose.yaml `user:`) that must still bind ports 67, 69 and 4011;
# a file capability grants that to node alone, if the container keeps NET_BIND_SERVICE.
RUN setcap cap_net_bind_service=+ep "$(readlink -f "$(command -v node)")"
COPY --from=build /app /app
WORKDIR /srv/rackboot
# The node image's own unprivileged user; compose.yaml sets the id that owns ./config and ./state.
USER node
# The executable itself, not `node bin/rackboot.js`: its first line carries the V8 flags.
ENTRYPOINT ["/app/bin/rackboot.js"]
CMD ["serve", "-c", "/srv/rackboot/rackboot.yaml"]
