package v1

import (
	"fmt"
	"sort"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// UnknownFields decodes a VirtualMachine or VirtualMachineInstance manifest
// (YAML or JSON) into into and returns the paths of the fields kvirt does not
// model, e.g. "spec.template.spec.domain.devices.tpm", sorted. The CRDs keep
// such fields (see the package doc); the controller and the launcher use this
// to report what they ignore instead of dropping it silently.
func UnknownFields(manifest []byte, into any) ([]string, error) {
	data, err := yaml.YAMLToJSON(manifest)
	if err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	strict, err := kjson.UnmarshalStrict(data, into, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	var paths []string
	for _, e := range strict {
		msg := e.Error()
		const prefix = "unknown field "
		if !strings.HasPrefix(msg, prefix) {
			// Duplicate fields and the like: report them verbatim.
			paths = append(paths, msg)
			continue
		}
		paths = append(paths, strings.Trim(strings.TrimPrefix(msg, prefix), `"`))
	}
	sort.Strings(paths)
	return paths, nil
}
