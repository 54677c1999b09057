# rackboot in a container. It needs the host's network (DHCP broadcasts, TFTP, HTTP on the
# provisioning LAN): see compose.yaml for the capabilities and volumes.
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
# Stock iPXE binaries for `rackboot fetch ipxe`.
RUN apt-get update && apt-get install -y --no-install-recommends ipxe ca-certificates gpgv && rm -rf /var/lib/apt/lists/*
COPY --from=build /app /app
WORKDIR /srv/rackboot
# The executable itself, not `node bin/rackboot.js`: its first line carries the V8 flags.
ENTRYPOINT ["/app/bin/rackboot.js"]
CMD ["serve", "-c", "/srv/rackboot/rackboot.yaml"]
