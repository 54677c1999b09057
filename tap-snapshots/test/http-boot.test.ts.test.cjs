/* IMPORTANT
 * This snapshot file is auto-generated, but designed for humans.
 * It should be checked into source control and tracked carefully.
 * Re-generate by setting TAP_SNAPSHOT=1 and running tests.
 * Make sure to inspect the output below.  Do not ignore changes!
 */
'use strict'
exports[`test/http-boot.test.ts > TAP > /boot.ipxe identifies the machine with iPXE variables and retries, bounded > entry script 1`] = `
#!ipxe
:rb-chain
chain --autofree http://10.77.0.1:8080/boot/\${netX/mac:hexhyp}.ipxe?arch=\${buildarch:uristring}&platform=\${platform:uristring}&uuid=\${uuid:uristring} || goto rb-retry
exit
:rb-retry
set rb-tries \${rb-tries}x
iseq \${rb-tries} xxxxx && goto rb-failed || echo rackboot: fetching the boot script of this machine failed, retrying in 5 s
sleep 5
goto rb-chain
:rb-failed
echo rackboot: giving up after 5 failed downloads, rebooting in 60 s
sleep 60
reboot

`

exports[`test/http-boot.test.ts > TAP > coreos-install scripts per firmware arch: kargs, initrd=main, retries > coreos-install i386 (BIOS iPXE) gets x86_64 1`] = `
#!ipxe
echo rackboot: node1 (52:54:00:12:34:56): profile coreos (coreos-install, i386)
:rb-kernel
set rb-step rb-kernel
kernel http://10.77.0.1:8080/assets/fcos/kernel initrd=main coreos.live.rootfs_url=http://10.77.0.1:8080/assets/fcos/rootfs.img coreos.inst.install_dev=/dev/sda coreos.inst.ignition_url=http://10.77.0.1:8080/ignition/52-54-00-12-34-56.ign?token=TOKEN ignition.firstboot ignition.platform.id=metal ignition.config.url=http://10.77.0.1:8080/ignition/installer/52-54-00-12-34-56.ign?token=TOKEN console=tty0 console=ttyS0,115200n8 || goto rb-retry
:rb-initrd0
set rb-step rb-initrd0
initrd --name main http://10.77.0.1:8080/assets/fcos/initramfs.img || goto rb-retry
boot || goto rb-failed
:rb-retry
set rb-tries \${rb-tries}x
iseq \${rb-tries} xxxxx && goto rb-failed || echo rackboot: download of \${rb-step} failed, retrying in 5 s
sleep 5
goto \${rb-step}
:rb-failed
echo rackboot: giving up after 5 failed downloads, rebooting in 60 s
sleep 60
reboot

`

exports[`test/http-boot.test.ts > TAP > coreos-install scripts per firmware arch: kargs, initrd=main, retries > coreos-install per-arch assets, arm64 1`] = `
#!ipxe
echo rackboot: node3 (52:54:00:12:34:58): profile multiarch (coreos-install, aarch64)
:rb-kernel
set rb-step rb-kernel
kernel http://10.77.0.1:8080/assets/fcos-arm/kernel initrd=main coreos.live.rootfs_url=http://10.77.0.1:8080/assets/fcos-arm/rootfs.img coreos.inst.install_dev=/dev/vda coreos.inst.ignition_url=http://10.77.0.1:8080/ignition/52-54-00-12-34-58.ign?token=TOKEN ignition.firstboot ignition.platform.id=metal ignition.config.url=http://10.77.0.1:8080/ignition/installer/52-54-00-12-34-58.ign?token=TOKEN console=tty0 console=ttyS0,115200n8 || goto rb-retry
:rb-initrd0
set rb-step rb-initrd0
initrd --name main http://10.77.0.1:8080/assets/fcos-arm/initramfs.img || goto rb-retry
boot || goto rb-failed
:rb-retry
set rb-tries \${rb-tries}x
iseq \${rb-tries} xxxxx && goto rb-failed || echo rackboot: download of \${rb-step} failed, retrying in 5 s
sleep 5
goto \${rb-step}
:rb-failed
echo rackboot: giving up after 5 failed downloads, rebooting in 60 s
sleep 60
reboot

`

exports[`test/http-boot.test.ts > TAP > coreos-install scripts per firmware arch: kargs, initrd=main, retries > coreos-install x86_64 efi 1`] = `
#!ipxe
echo rackboot: node1 (52:54:00:12:34:56): profile coreos (coreos-install, x86_64)
:rb-kernel
set rb-step rb-kernel
kernel http://10.77.0.1:8080/assets/fcos/kernel initrd=main coreos.live.rootfs_url=http://10.77.0.1:8080/assets/fcos/rootfs.img coreos.inst.install_dev=/dev/sda coreos.inst.ignition_url=http://10.77.0.1:8080/ignition/52-54-00-12-34-56.ign?token=TOKEN ignition.firstboot ignition.platform.id=metal ignition.config.url=http://10.77.0.1:8080/ignition/installer/52-54-00-12-34-56.ign?token=TOKEN console=tty0 console=ttyS0,115200n8 || goto rb-retry
:rb-initrd0
set rb-step rb-initrd0
initrd --name main http://10.77.0.1:8080/assets/fcos/initramfs.img || goto rb-retry
boot || goto rb-failed
:rb-retry
set rb-tries \${rb-tries}x
iseq \${rb-tries} xxxxx && goto rb-failed || echo rackboot: download of \${rb-step} failed, retrying in 5 s
sleep 5
goto \${rb-step}
:rb-failed
echo rackboot: giving up after 5 failed downloads, rebooting in 60 s
sleep 60
reboot

`

exports[`test/http-boot.test.ts > TAP > installed machines boot their disk; unknown ones are told so; events name the script > installed: local disk 1`] = `
#!ipxe
echo rackboot: node1 (52:54:00:12:34:56) is installed, booting from the local disk
echo rackboot: to install it again run: rackboot reprovision 52:54:00:12:34:56
sleep 3
iseq \${platform} pcbios || exit
sanboot --no-describe --drive 0x80 || exit

`

exports[`test/http-boot.test.ts > TAP > installed machines boot their disk; unknown ones are told so; events name the script > unknown machine 1`] = `
#!ipxe
echo
echo rackboot: this machine (52:54:00:aa:bb:cc) is not in the rackboot inventory
echo rackboot: add it under machines: in rackboot.yaml, or adopt it: rackboot machines adopt 52:54:00:aa:bb:cc --profile NAME
echo rackboot: rebooting in 60 s
sleep 60
reboot

`

exports[`test/http-boot.test.ts > TAP > linux profile: every initrd named and listed as initrd=, templated args > linux x86_64 1`] = `
#!ipxe
echo rackboot: node2 (52:54:00:12:34:57): profile plain (linux, x86_64)
:rb-kernel
set rb-step rb-kernel
kernel http://10.77.0.1:8080/assets/linux/vmlinuz initrd=initramfs.img initrd=extra.cpio console=ttyS0 my.ignition=http://10.77.0.1:8080/ignition/52-54-00-12-34-57.ign?token=TOKEN my.report=http://10.77.0.1:8080/api/v1/machines/52-54-00-12-34-57/events?token=TOKEN role=storage || goto rb-retry
:rb-initrd0
set rb-step rb-initrd0
initrd --name initramfs.img http://10.77.0.1:8080/assets/linux/initramfs.img || goto rb-retry
:rb-initrd1
set rb-step rb-initrd1
initrd --name extra.cpio http://10.77.0.1:8080/assets/linux/extra.cpio || goto rb-retry
boot || goto rb-failed
:rb-retry
set rb-tries \${rb-tries}x
iseq \${rb-tries} xxxxx && goto rb-failed || echo rackboot: download of \${rb-step} failed, retrying in 5 s
sleep 5
goto \${rb-step}
:rb-failed
echo rackboot: giving up after 5 failed downloads, rebooting in 60 s
sleep 60
reboot

`
