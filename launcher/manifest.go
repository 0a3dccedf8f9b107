package launcher

import (
	"fmt"
	"os"
	"strings"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// LoadManifest reads a VirtualMachineInstance, or a VirtualMachine whose template becomes the VMI (name,
// namespace and labels from the VM; the UID is the VM's or, when empty, a fixed local one), from YAML or
// JSON. Fields kvirt does not model are an error naming each one, never silently dropped.
func LoadManifest(data []byte) (*v1.VirtualMachineInstance, error) {
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	switch head.Kind {
	case "VirtualMachineInstance", "":
		var vmi v1.VirtualMachineInstance
		unknown, err := v1.UnknownFields(data, &vmi)
		if err != nil {
			return nil, err
		}
		if len(unknown) > 0 {
			return nil, unknownErr(unknown)
		}
		if vmi.UID == "" {
			vmi.UID = localUID
		}
		return &vmi, nil
	case "VirtualMachine":
		var vm v1.VirtualMachine
		unknown, err := v1.UnknownFields(data, &vm)
		if err != nil {
			return nil, err
		}
		if len(unknown) > 0 {
			return nil, unknownErr(unknown)
		}
		if vm.Spec.Template == nil {
			return nil, fmt.Errorf("spec.template: required: a VirtualMachine runs its template")
		}
		vmi := &v1.VirtualMachineInstance{Spec: *vm.Spec.Template.Spec.DeepCopy()}
		vmi.Name, vmi.Namespace, vmi.UID = vm.Name, vm.Namespace, vm.UID
		vmi.Labels = vm.Spec.Template.ObjectMeta.Labels
		if vmi.UID == "" {
			vmi.UID = localUID
		}
		return vmi, nil
	default:
		return nil, fmt.Errorf("kind %q: want VirtualMachineInstance or VirtualMachine", head.Kind)
	}
}

// localUID stands in for the UID of a manifest run locally without one (the cloud-init instance-id and the
// default firmware UUID derive from it).
const localUID = types.UID("00000000-0000-4000-8000-00006b766972")

func unknownErr(paths []string) error {
	return fmt.Errorf("fields kvirt does not support: %s (remove them; kvirt never ignores a field silently)", strings.Join(paths, ", "))
}

// LoadManifestFile is LoadManifest on a file.
func LoadManifestFile(path string) (*v1.VirtualMachineInstance, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vmi, err := LoadManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return vmi, nil
}

// PodOptions returns the pod-mode Options: the VMI from DefaultVMIFile, the token from DefaultTokenFile,
// the control API on :8186 and DefaultSocket, disks under DefaultWorkDir, kvirt's kernel from
// DefaultImagesDir, containerDisk volumes copied by the pod's init containers from containerdisk.DisksDir,
// the pod's own network namespace and /dev/termination-log. The caller adds Signals and
// Log, then calls Run and exits with ExitCode.
func PodOptions() (Options, error) {
	o := Options{
		ImagesDir: DefaultImagesDir, Network: NetworkMode{Kind: "pod"},
		ControlAddr: fmt.Sprintf(":%d", control.DefaultPort), ControlSocket: control.DefaultSocket,
		TerminationLog: grace.DefaultTerminationLog,
	}
	o.Dirs.Work = DefaultWorkDir
	o.Dirs.ContainerDisks = containerdisk.DisksDir
	vmi, err := LoadManifestFile(DefaultVMIFile)
	if err != nil {
		return o, fmt.Errorf("read the VMI the controller mounted: %w", err)
	}
	o.VMI = vmi
	tok, err := os.ReadFile(DefaultTokenFile)
	if err != nil {
		return o, fmt.Errorf("read the control API token: %w", err)
	}
	o.Token = strings.TrimSpace(string(tok))
	return o, nil
}

// ExitCode is the process exit code for an outcome: 0 Succeeded, 1 guest failure, 2 launcher failure.
func ExitCode(o grace.Outcome) int { return o.ExitCode }
