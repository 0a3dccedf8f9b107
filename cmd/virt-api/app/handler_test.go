package app

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Requests refused before anything is read from the cluster: unknown paths, wrong methods, bodies that
// do not decode, restart grace periods KubeVirt refuses. Each answer is a metav1.Status as KubeVirt writes it.
func TestHandlerRefusals(t *testing.T) {
	h := &Handler{} // no clients: none of these requests may reach them
	vm := VersionPath + "/namespaces/ns/virtualmachines/vm/"
	for _, tc := range []struct {
		method, path, body string
		code               int
		message            string
	}{
		{"GET", VersionPath + "/nothing", "", 404, "the server could not find the requested resource"},
		{"GET", VersionPath + "x", "", 404, "the server could not find the requested resource"},
		{"PUT", vm + "migrate", "", 404, "the server could not find the requested resource"},
		{"PUT", VersionPath + "/namespaces/ns/pods/p/start", "", 404, "the server could not find the requested resource"},
		{"GET", vm + "start", "", 405, `the server does not allow this method on the requested resource`},
		{"POST", VersionPath + "/version", "", 405, `the server does not allow this method on the requested resource`},
		{"PUT", vm + "start", `{"paused": "yes"}`, 400, "Can not unmarshal Request body to struct, error: "},
		{"PUT", vm + "stop", `[`, 400, "Can not unmarshal Request body to struct, error: "},
		{"PUT", vm + "restart", `{"gracePeriodSeconds": 30}`, 400, "For force restart, only gracePeriod=0 is supported for now"},
		{"PUT", vm + "restart", `gracePeriodSeconds: -1`, 400, "gracePeriod has to be greater or equal to 0"},
	} {
		t.Run(tc.method+" "+strings.TrimPrefix(tc.path, VersionPath), func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			var st metav1.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if rec.Code != tc.code || int(st.Code) != tc.code || st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure {
				t.Errorf("got %d %+v, want %d", rec.Code, st, tc.code)
			}
			if !strings.HasPrefix(st.Message, tc.message) {
				t.Errorf("message %q, want %q", st.Message, tc.message)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

// GET of the version path and of the group answer the discovery documents.
func TestHandlerDiscovery(t *testing.T) {
	rec := httptest.NewRecorder()
	(&Handler{}).ServeHTTP(rec, httptest.NewRequest("GET", VersionPath, nil))
	var l metav1.APIResourceList
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || rec.Code != http.StatusOK || l.Kind != "APIResourceList" || l.GroupVersion != GroupVersion || len(l.APIResources) != 5 {
		t.Errorf("resource list: %d %s %v", rec.Code, rec.Body, err)
	}
	rec = httptest.NewRecorder()
	groupHandler{}.ServeHTTP(rec, httptest.NewRequest("GET", GroupPath, nil))
	var g metav1.APIGroup
	if err := json.Unmarshal(rec.Body.Bytes(), &g); err != nil || g.Kind != "APIGroup" || g.PreferredVersion.GroupVersion != GroupVersion {
		t.Errorf("group: %s %v", rec.Body, err)
	}
}
