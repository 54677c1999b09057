import type { Mac } from './mac.js';

/**
 * Vendors of the NICs a provisioning network mostly sees, by OUI (the first three bytes of a MAC).
 * Deliberately small: enough to tell a Supermicro board from a Dell or a test VM in the discovered
 * list; an unknown OUI just shows no vendor. From the IEEE registry assignments.
 */
const VENDOR_BY_OUI: Readonly<Record<string, string>> = {
  // Virtual machines. 52:54:00 is locally administered, but QEMU/libvirt use it for every guest NIC.
  '52:54:00': 'QEMU',
  '08:00:27': 'VirtualBox',
  '00:50:56': 'VMware',
  '00:0c:29': 'VMware',
  '00:05:69': 'VMware',
  '00:16:3e': 'Xen',
  '00:15:5d': 'Microsoft Hyper-V',
  // Server vendors (onboard NICs and BMCs).
  '00:25:90': 'Supermicro',
  '0c:c4:7a': 'Supermicro',
  'ac:1f:6b': 'Supermicro',
  '3c:ec:ef': 'Supermicro',
  '00:22:19': 'Dell',
  '14:18:77': 'Dell',
  '18:66:da': 'Dell',
  '24:6e:96': 'Dell',
  'b8:ac:6f': 'Dell',
  'd0:94:66': 'Dell',
  'e4:43:4b': 'Dell',
  'f8:bc:12': 'Dell',
  '00:17:a4': 'HPE',
  '3c:a8:2a': 'HPE',
  '94:18:82': 'HPE',
  '9c:8e:99': 'HPE',
  '00:1a:64': 'IBM',
  '40:f2:e9': 'IBM',
  // Add-in NIC vendors.
  '00:1b:21': 'Intel',
  '00:1e:67': 'Intel',
  '3c:fd:fe': 'Intel',
  'a0:36:9f': 'Intel',
  '00:02:c9': 'Mellanox',
  '24:8a:07': 'Mellanox',
  '7c:fe:90': 'Mellanox',
  '98:03:9b': 'Mellanox',
  'f4:52:14': 'Mellanox',
  '00:10:18': 'Broadcom',
  '00:90:fa': 'Emulex',
};

/** The NIC vendor for a MAC, or undefined when its OUI is not in the table. */
export function vendorOf(mac: Mac): string | undefined {
  return VENDOR_BY_OUI[mac.slice(0, 8)];
}
