package controller

import (
	"crypto/sha256"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/google/uuid"
	v1 "github.com/kvirt/kvirt/api/v1"
	"k8s.io/apimachinery/pkg/types"
)

// firmwareUUIDNamespace is KubeVirt's namespace for UUIDv5 firmware UUIDs of VMs created without one
// (pkg/virt-controller/watch/vm/firmware.go).
var firmwareUUIDNamespace = uuid.MustParse("6a1a24a1-4061-4607-8bf4-a3963d0c5895")

// LegacyFirmwareUUID is the firmware (SMBIOS) UUID KubeVirt's VM controller gives a VM whose template has
// none after admission (its CalculateLegacyUUID): UUIDv5 (SHA-1) of the VM name. New VMs get a random
// one instead (applyABIDefaults).
func LegacyFirmwareUUID(vmName string) types.UID {
	return types.UID(uuid.NewSHA1(firmwareUUIDNamespace, []byte(vmName)).String())
}

// StableMAC derives a locally administered unicast MAC from the VM UID and an interface name. It is
// stable for the life of the VM object and different for each interface (beyond KubeVirt: see the
// package doc).
func StableMAC(vmUID types.UID, iface string) string {
	sum := sha256.Sum256([]byte(string(vmUID) + "/" + iface))
	mac := net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
	return mac.String()
}

// applyABIDefaults fills the VM template's firmware identity and interface MACs where empty, and reports
// whether it changed anything (the caller then writes the VM spec once; see abiDefaultsOps).
//
// New is true on the controller's first sync of a VM (it has no VirtualMachineControllerFinalizer yet):
// kvirt has no admission webhook, and this is its stand-in for KubeVirt's VM mutator on create, which
// gives an empty firmware.uuid a random UUID and an empty firmware.serial a random UUID string. Later an
// empty UUID gets LegacyFirmwareUUID, as KubeVirt's FirmwareController does for a VM whose UUID was
// removed by an update, and an empty serial stays empty (the mutator sets it on create only). newUUID is
// the random source (uuid.NewString).
func applyABIDefaults(vm *v1.VirtualMachine, isNew bool, newUUID func() string) bool {
	if vm.Spec.Template == nil {
		return false
	}
	changed := false
	dom := &vm.Spec.Template.Spec.Domain
	if dom.Firmware == nil {
		dom.Firmware = &v1.Firmware{}
	}
	fw := dom.Firmware
	if fw.UUID == "" {
		if isNew {
			fw.UUID = types.UID(newUUID())
		} else {
			fw.UUID = LegacyFirmwareUUID(vm.Name)
		}
		changed = true
	}
	if isNew && fw.Serial == "" {
		fw.Serial = newUUID()
		changed = true
	}
	if vm.UID != "" {
		for i := range dom.Devices.Interfaces {
			ifc := &dom.Devices.Interfaces[i]
			if ifc.MacAddress == "" {
				ifc.MacAddress = StableMAC(vm.UID, ifc.Name)
				changed = true
			}
		}
	}
	return changed
}

func metav1Time(t time.Time) metav1.Time { return metav1.NewTime(t) }
