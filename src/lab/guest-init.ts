/**
 * The lab guest: a busybox initramfs that stands in for an OS installer. It brings up the NIC,
 * fetches the Ignition URL from its kernel command line, checks the config is JSON that names its
 * own MAC, reports `installed` (or `failed`) to the events URL, prints markers on the serial
 * console and powers off. Pure text: assets.ts packs it.
 */

/**
 * Debian's cloud kernel builds virtio-net as a module with dependencies; insmod (no modprobe, no
 * depmod data in the initramfs) needs them in this order (real-firmware.md).
 */
export const NIC_MODULES = [
  'failover',
  'net_failover',
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_net',
] as const;

/** Kernel command-line keys the lab profile fills with `{{ignition_url}}` and `{{events_url}}`. */
export const IGNITION_ARGUMENT = 'rb.ignition';
export const EVENTS_ARGUMENT = 'rb.events';

/** Lines the guest prints on the serial console; the harness parses them. */
export const GUEST_MARKERS = {
  init: 'RB-LAB-INIT',
  network: 'RB-LAB-NET',
  ignitionFetched: 'RB-LAB-IGNITION-FETCHED',
  ignitionBegin: 'RB-LAB-IGNITION-BEGIN',
  ignitionEnd: 'RB-LAB-IGNITION-END',
  result: 'RB-LAB-RESULT',
} as const;

const FETCH_TIMEOUT_SECONDS = 30;

/**
 * busybox 1.35's `wget -T` segfaults (real-firmware.md), so every wget runs under `timeout`.
 * The Ignition is printed between markers so the harness can parse it as JSON itself.
 */
export function guestInitScript(): string {
  const m = GUEST_MARKERS;
  return `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
dmesg -n 1
echo "${m.init}"

ignition_url=
events_url=
for argument in $(cat /proc/cmdline); do
  case "$argument" in
    ${IGNITION_ARGUMENT}=*) ignition_url="\${argument#${IGNITION_ARGUMENT}=}" ;;
    ${EVENTS_ARGUMENT}=*) events_url="\${argument#${EVENTS_ARGUMENT}=}" ;;
  esac
done
mac=unknown

post_event() {
  timeout ${FETCH_TIMEOUT_SECONDS} wget -q -O /dev/null --header 'Content-Type: application/json' \\
    --post-data "$1" "$events_url"
}

fail() {
  echo "${m.result} failed mac=$mac reason=$1"
  if [ -n "$events_url" ] && [ -n "$address" ]; then
    post_event "{\\"type\\":\\"failed\\",\\"message\\":\\"lab guest: $1\\"}"
  fi
  poweroff -f
}

address=
[ -n "$ignition_url" ] || fail "no ${IGNITION_ARGUMENT}= on the kernel command line"
[ -n "$events_url" ] || fail "no ${EVENTS_ARGUMENT}= on the kernel command line"

for module in ${NIC_MODULES.join(' ')}; do
  insmod /lib/modules/$module.ko || fail "insmod $module"
done

nic=
attempt=0
while [ -z "$nic" ] && [ $attempt -lt 50 ]; do
  for path in /sys/class/net/*; do
    name=\${path##*/}
    [ "$name" = lo ] || nic=$name
  done
  [ -n "$nic" ] || sleep 0.1
  attempt=$((attempt + 1))
done
[ -n "$nic" ] || fail "no network interface appeared"
mac=$(cat /sys/class/net/$nic/address)
ip link set lo up
ip link set "$nic" up
udhcpc -i "$nic" -f -q -n -t 10 -T 2 -s /bin/udhcpc-script -V rackboot-lab-guest >/dev/null 2>&1 \\
  || fail "udhcpc got no lease"
address=$(cat /tmp/address)
echo "${m.network} mac=$mac ip=$address"

timeout ${FETCH_TIMEOUT_SECONDS} wget -q -O /tmp/ignition.json "$ignition_url" || fail "ignition fetch"
echo "${m.ignitionFetched}"
echo "${m.ignitionBegin}"
cat /tmp/ignition.json
echo
echo "${m.ignitionEnd}"
awk -f /bin/json-check.awk /tmp/ignition.json || fail "ignition is not valid JSON"
grep -qi "$mac" /tmp/ignition.json || fail "ignition does not name $mac"
post_event '{"type":"installed"}' || fail "posting installed"
echo "${m.result} installed mac=$mac ip=$address"
poweroff -f
`;
}

/** udhcpc calls this on each lease event; `bound` is the one that matters for a one-shot run. */
export function udhcpcScript(): string {
  return `#!/bin/sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "\${subnet:-255.255.255.0}" up
    echo "$ip" > /tmp/address
    ;;
esac
exit 0
`;
}

/**
 * A strict JSON recognizer in busybox awk (recursive descent over the whole file); exit 0 when the
 * text is one JSON value and nothing else.
 */
export function jsonCheckAwk(): string {
  return `function skip() { while (pos <= n && index(" \\t\\r\\n", substr(s, pos, 1)) > 0) pos++ }
function text(   c) {
  pos++
  while (pos <= n) {
    c = substr(s, pos, 1)
    if (c == "\\\\") { pos += 2; continue }
    if (c == "\\"") { pos++; return 1 }
    pos++
  }
  return 0
}
function members(closer,   c) {
  pos++; skip()
  if (substr(s, pos, 1) == closer) { pos++; return 1 }
  while (1) {
    skip()
    if (closer == "}") {
      if (substr(s, pos, 1) != "\\"" || !text()) return 0
      skip()
      if (substr(s, pos, 1) != ":") return 0
      pos++
    }
    if (!value()) return 0
    skip(); c = substr(s, pos, 1); pos++
    if (c == closer) return 1
    if (c != ",") return 0
  }
}
function value(   c, rest) {
  skip(); c = substr(s, pos, 1)
  if (c == "{") return members("}")
  if (c == "[") return members("]")
  if (c == "\\"") return text()
  rest = substr(s, pos)
  if (match(rest, /^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?/)) { pos += RLENGTH; return 1 }
  if (substr(rest, 1, 4) == "true" || substr(rest, 1, 4) == "null") { pos += 4; return 1 }
  if (substr(rest, 1, 5) == "false") { pos += 5; return 1 }
  return 0
}
{ s = s $0 "\\n" }
END { n = length(s); pos = 1; ok = value(); skip(); exit (ok && pos > n) ? 0 : 1 }
`;
}
