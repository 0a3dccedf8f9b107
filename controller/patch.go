package controller

import (
	"encoding/json"
	"fmt"
	"strconv"

	v1 "github.com/kvirt/kvirt/api/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// The controller changes VMs and VMIs it does not own the spec of with JSON patches of just the fields it
// sets. A typed Update would send back the object as our Go types see it, and the CRDs keep fields those
// types do not model (x-kubernetes-preserve-unknown-fields on the spec objects): an Update would silently
// delete them. Each patch first sets metadata.resourceVersion to the version it was computed from, so
// the apiserver's optimistic concurrency check fails it with 409 Conflict (and the sync retries on fresh
// data) exactly where an Update would have. (A JSON-patch "test" of resourceVersion fails as 422 Invalid
// with no details, which reads as a bad request.)

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// jsonPatch encodes ops after setting resourceVersion rv (none when rv is empty): stale → 409 Conflict.
func jsonPatch(rv string, ops ...patchOp) ([]byte, error) {
	all := make([]patchOp, 0, len(ops)+1)
	if rv != "" {
		all = append(all, patchOp{Op: "replace", Path: "/metadata/resourceVersion", Value: rv})
	}
	all = append(all, ops...)
	return json.Marshal(all)
}

// setField is an "add" op, which sets a member whether or not it exists. A nil or empty slice value is
// written as an empty list, so removing the last finalizer leaves [] rather than failing to encode.
func setField(path string, value any) patchOp {
	if s, ok := value.([]string); ok && s == nil {
		value = []string{}
	}
	return patchOp{Op: "add", Path: path, Value: value}
}

// abiDefaultsOps applies the ABI defaults to vm (see applyABIDefaults) and returns the patch ops that
// write exactly the fields it filled in.
func abiDefaultsOps(vm *v1.VirtualMachine, isNew bool, newUUID func() string) []patchOp {
	if vm.Spec.Template == nil {
		return nil
	}
	dom := &vm.Spec.Template.Spec.Domain
	var before v1.Firmware
	hadFirmware := dom.Firmware != nil
	if hadFirmware {
		before = *dom.Firmware
	}
	emptyMAC := make([]bool, len(dom.Devices.Interfaces))
	for i, ifc := range dom.Devices.Interfaces {
		emptyMAC[i] = ifc.MacAddress == ""
	}
	if !applyABIDefaults(vm, isNew, newUUID) {
		return nil
	}
	const domain = "/spec/template/spec/domain"
	var ops []patchOp
	fw := dom.Firmware
	if !hadFirmware {
		set := map[string]any{"uuid": fw.UUID}
		if fw.Serial != "" {
			set["serial"] = fw.Serial
		}
		ops = append(ops, setField(domain+"/firmware", set))
	} else {
		if before.UUID != fw.UUID {
			ops = append(ops, setField(domain+"/firmware/uuid", fw.UUID))
		}
		if before.Serial != fw.Serial {
			ops = append(ops, setField(domain+"/firmware/serial", fw.Serial))
		}
	}
	for i, ifc := range dom.Devices.Interfaces {
		if emptyMAC[i] && ifc.MacAddress != "" {
			ops = append(ops, patchOp{Op: "test", Path: fmt.Sprintf("%s/devices/interfaces/%d/name", domain, i), Value: ifc.Name})
			ops = append(ops, setField(fmt.Sprintf("%s/devices/interfaces/%d/macAddress", domain, i), ifc.MacAddress))
		}
	}
	return ops
}

// vmiFromRawTemplate encodes vmi (rendered by newVMIFromTemplate: metadata, owner, finalizer) with the spec
// taken from the stored VM's template, fields our types do not model included; a paused start still sets
// startStrategy. rawVM must be the VM with uid (a VM re-created under the same name is refused).
func vmiFromRawTemplate(vmi *v1.VirtualMachineInstance, rawVM []byte, uid types.UID) ([]byte, error) {
	var vm map[string]any
	if err := json.Unmarshal(rawVM, &vm); err != nil {
		return nil, fmt.Errorf("decode the stored VM: %w", err)
	}
	got, _, _ := unstructured.NestedString(vm, "metadata", "uid")
	if types.UID(got) != uid {
		return nil, fmt.Errorf("the stored VM has uid %q, not %q (re-created); retrying", got, uid)
	}
	spec, found, err := unstructured.NestedMap(vm, "spec", "template", "spec")
	if err != nil || !found {
		return nil, fmt.Errorf("the stored VM has no spec.template.spec (%v)", err)
	}
	// The generation and template hash the VMI records are the stored VM's, whose spec it gets.
	var typed struct {
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
		Spec struct {
			Template struct {
				Spec v1.VirtualMachineInstanceSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(rawVM, &typed); err != nil {
		return nil, fmt.Errorf("decode the stored VM's template spec: %w", err)
	}
	gen := typed.Metadata.Generation
	vmi = vmi.DeepCopy()
	if vmi.Annotations == nil {
		vmi.Annotations = map[string]string{}
	}
	vmi.Annotations[v1.VirtualMachineGenerationAnnotation] = strconv.FormatInt(gen, 10)
	vmi.Annotations[TemplateHashAnnotation] = templateHash(&typed.Spec.Template.Spec)
	out, err := runtime.DefaultUnstructuredConverter.ToUnstructured(vmi)
	if err != nil {
		return nil, err
	}
	if vmi.Spec.StartStrategy != nil {
		spec["startStrategy"] = string(*vmi.Spec.StartStrategy)
	}
	out["spec"] = spec
	delete(out, "status")
	out["apiVersion"] = v1.GroupVersion.String()
	out["kind"] = "VirtualMachineInstance"
	return json.Marshal(out)
}
