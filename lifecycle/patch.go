package lifecycle

import (
	"encoding/json"
	"fmt"
)

// patchOp is one RFC 6902 operation. Value is always written for test, add and replace (a nil
// Value becomes JSON null, which a test needs to assert "absent"), never for remove.
type patchOp struct {
	Op    string
	Path  string
	Value any
}

func (o patchOp) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// jsonPatch is an ordered list of operations.
type jsonPatch []patchOp

func (p *jsonPatch) test(path string, v any)    { *p = append(*p, patchOp{"test", path, v}) }
func (p *jsonPatch) add(path string, v any)     { *p = append(*p, patchOp{"add", path, v}) }
func (p *jsonPatch) replace(path string, v any) { *p = append(*p, patchOp{"replace", path, v}) }
func (p *jsonPatch) remove(path string)         { *p = append(*p, patchOp{"remove", path, nil}) }

// bytes renders the patch. Marshalling API types cannot fail; if it ever does the error says which patch.
func (p jsonPatch) bytes() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode JSON patch: %w", err)
	}
	return b, nil
}
