package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// hostileLauncher answers /v1/watch and /v1/status with body, as a launcher taken over by its guest could.
func hostileLauncher(t *testing.T, body string) *Client {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(hs.Close)
	return NewClient(strings.TrimPrefix(hs.URL, "http://"), "t")
}

// Review finding F4: the interface list is copied into the VMI's status, so it is bounded too.
func TestStatusBounds(t *testing.T) {
	many := func(n int) string {
		var ifs []Interface
		for i := range n {
			ifs = append(ifs, Interface{Name: fmt.Sprint("if", i)})
		}
		b, _ := json.Marshal(Status{Phase: Running, Interfaces: ifs})
		return string(b)
	}
	manyIPs, _ := json.Marshal(Status{Phase: Running, Interfaces: []Interface{{Name: "default", IPs: strings.Split(strings.Repeat("10.0.2.2,", MaxInterfaceIPs+1), ",")}}})
	for _, tc := range []struct {
		name, body, wantErr string
	}{
		{"one interface", many(1), ""},
		{"the most interfaces", many(MaxInterfaces), ""},
		{"too many interfaces", many(MaxInterfaces + 1), fmt.Sprintf("status lists %d interfaces, more than %d: refused", MaxInterfaces+1, MaxInterfaces)},
		{"too many IPs", string(manyIPs), "status interface 0 lists"},
		{"a message over the bound", `{"phase":"Running","message":"` + strings.Repeat("a", MaxStatusBytes) + `"}`, fmt.Sprintf("exceeds %d bytes: refused", MaxStatusBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileLauncher(t, tc.body+"\n")
			var reported []Status
			werr := c.Watch(ctx(t), func(s Status) { reported = append(reported, s) })
			_, serr := c.Status(ctx(t))
			if tc.wantErr == "" {
				if len(reported) != 1 || !errors.Is(werr, io.ErrUnexpectedEOF) || serr != nil {
					t.Fatalf("watch reported %d, ended with %v; status: %v", len(reported), werr, serr)
				}
				return
			}
			if len(reported) != 0 || werr == nil || !strings.Contains(werr.Error(), tc.wantErr) {
				t.Fatalf("watch reported %d, ended with %v; want no report and %q", len(reported), werr, tc.wantErr)
			}
			if serr == nil || !strings.Contains(serr.Error(), "refused") {
				t.Fatalf("status: %v, want it refused", serr)
			}
		})
	}
}

// FuzzDecodeStream feeds arbitrary watch streams: decoding never panics, and every status reported is
// within the bounds.
func FuzzDecodeStream(f *testing.F) {
	b, _ := json.Marshal(Status{Phase: Running, Interfaces: []Interface{{Name: "default", MAC: "02:00:00:00:00:01", IP: "10.0.2.2", IPs: []string{"10.0.2.2"}}}})
	f.Add(append(append(b, '\n'), b...))
	f.Add([]byte(`{"phase":"Failed","reason":"Crashed"}` + "\n\n" + `{"interfaces":[{},{},{}]}`))
	f.Add([]byte(`{"phase":"Running"} {"phase":"Running"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		err := decodeStream(bytes.NewReader(data), func(s Status) {
			n++
			if len(s.Interfaces) > MaxInterfaces {
				t.Fatalf("reported %d interfaces", len(s.Interfaces))
			}
			for _, in := range s.Interfaces {
				if len(in.IPs) > MaxInterfaceIPs {
					t.Fatalf("reported %d IPs", len(in.IPs))
				}
			}
		})
		if err == nil {
			t.Fatal("a stream ended without an error")
		}
		if lines := bytes.Count(data, []byte("\n")) + 1; n > lines {
			t.Fatalf("%d reports from %d lines", n, lines)
		}
	})
}
