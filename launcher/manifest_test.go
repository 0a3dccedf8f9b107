package launcher

import (
	"strings"
	"testing"
)

func TestLoadManifest(t *testing.T) {
	vmi, err := LoadManifest([]byte(`
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm1, namespace: ns1}
spec:
  runStrategy: Always
  template:
    metadata: {labels: {app: web}}
    spec:
      domain:
        resources: {requests: {memory: 64Mi}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if vmi.Name != "vm1" || vmi.Namespace != "ns1" || vmi.Labels["app"] != "web" || vmi.UID != localUID {
		t.Fatalf("vmi %+v", vmi.ObjectMeta)
	}
	if _, ok := vmi.Spec.Domain.Resources.Requests["memory"]; !ok {
		t.Fatal("template spec lost")
	}
	_, err = LoadManifest([]byte(`
kind: VirtualMachineInstance
metadata: {name: x}
spec:
  domain:
    devices: {tpm: {}}
    resources: {requests: {memory: 64Mi}}
`))
	if err == nil || !strings.Contains(err.Error(), "spec.domain.devices.tpm") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := LoadManifest([]byte("kind: Pod\n")); err == nil || !strings.Contains(err.Error(), `kind "Pod"`) {
		t.Fatalf("wrong kind: %v", err)
	}
	if _, err := LoadManifest([]byte("kind: VirtualMachine\nmetadata: {name: x}\nspec: {}\n")); err == nil || !strings.Contains(err.Error(), "spec.template") {
		t.Fatalf("VM without template: %v", err)
	}
}
