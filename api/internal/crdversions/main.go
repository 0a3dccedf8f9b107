// Command crdversions post-processes the CRDs controller-gen writes from
// api/v1: it adds the deprecated, served-only kubevirt.io/v1alpha3 version
// with exactly the v1 schema (KubeVirt serves both; conversion is None because
// the schemas are identical) and KubeVirt's `kubevirt.io: ""` label.
//
// It also tightens every resource.Quantity field: controller-gen's pattern
// accepts any exponent, and apimachinery's ParseQuantity spends minutes on
// strings like "1e-999999999", so one stored object with such a value would
// stall every typed client (the controller's informers) that decodes it. The
// CRD therefore limits the exponent to three digits and the string to 64
// characters; real quantities never come close.
//
// Usage: go run ./api/internal/crdversions deploy/crds/*.yaml
package main

import (
	"bytes"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// DeprecationWarning is KubeVirt's warning for kubevirt.io/v1alpha3.
const DeprecationWarning = "kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release."

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdversions CRD.yaml... (normally run by `just generate`)")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := process(path); err != nil {
			fmt.Fprintf(os.Stderr, "crdversions: %s: %v (regenerate with `just generate`)\n", path, err)
			os.Exit(1)
		}
	}
}

func process(path string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := Transform(in)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// Transform returns the CRD with a v1alpha3 version mirroring v1. It is
// idempotent: an existing v1alpha3 entry is replaced.
func Transform(in []byte) ([]byte, error) {
	in = bytes.TrimPrefix(bytes.TrimSpace(in), []byte("---\n"))
	var crd map[string]any
	if err := yaml.Unmarshal(in, &crd); err != nil {
		return nil, fmt.Errorf("decode CRD: %w", err)
	}
	meta, _ := crd["metadata"].(map[string]any)
	spec, _ := crd["spec"].(map[string]any)
	if meta == nil || spec == nil {
		return nil, fmt.Errorf("not a CustomResourceDefinition: metadata or spec missing")
	}
	labels, _ := meta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels["kubevirt.io"] = ""
	meta["labels"] = labels

	versions, _ := spec["versions"].([]any)
	var v1 map[string]any
	var kept []any
	for _, v := range versions {
		m, _ := v.(map[string]any)
		switch m["name"] {
		case "v1":
			v1 = m
			kept = append(kept, m)
		case "v1alpha3":
		default:
			kept = append(kept, v)
		}
	}
	if v1 == nil {
		return nil, fmt.Errorf("no v1 version to mirror")
	}
	// Deep copy v1 through a JSON round trip.
	raw, err := yaml.Marshal(v1)
	if err != nil {
		return nil, err
	}
	var alpha map[string]any
	if err := yaml.Unmarshal(raw, &alpha); err != nil {
		return nil, err
	}
	alpha["name"] = "v1alpha3"
	alpha["served"] = true
	alpha["storage"] = false
	alpha["deprecated"] = true
	alpha["deprecationWarning"] = DeprecationWarning
	spec["versions"] = append(kept, alpha)
	for _, v := range spec["versions"].([]any) {
		tightenQuantities(v)
	}
	spec["conversion"] = map[string]any{"strategy": "None"}

	out, err := yaml.Marshal(crd)
	if err != nil {
		return nil, err
	}
	return append([]byte("---\n"), out...), nil
}

// controllerGenQuantityPattern is the pattern controller-gen v0.18 emits for resource.Quantity.
const controllerGenQuantityPattern = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`

// QuantityPattern is the same grammar with a bounded integer exponent.
const QuantityPattern = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,3}))?$`

// QuantityMaxLength bounds quantity strings.
const QuantityMaxLength = 64

func tightenQuantities(node any) {
	switch n := node.(type) {
	case map[string]any:
		if n["pattern"] == controllerGenQuantityPattern {
			n["pattern"] = QuantityPattern
			n["maxLength"] = QuantityMaxLength
		}
		for _, v := range n {
			tightenQuantities(v)
		}
	case []any:
		for _, v := range n {
			tightenQuantities(v)
		}
	}
}
