package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle"
	"github.com/kvirt/kvirt/version"
)

// GroupVersion is the API virt-api serves, KubeVirt's subresources.kubevirt.io/v1.
const GroupVersion = v1.SubresourceGroupName + "/v1"

// GroupPath and VersionPath are where it is served.
const (
	GroupPath   = "/apis/" + v1.SubresourceGroupName
	VersionPath = "/apis/" + GroupVersion
)

// maxBody bounds a request body (the options are a few fields).
const maxBody = 64 << 10

// unmarshalBodyFmt is KubeVirt's 400 for a body that does not decode.
const unmarshalBodyFmt = "Can not unmarshal Request body to struct, error: %s"

// Handler serves KubeVirt's subresource API under VersionPath, after the generic apiserver authenticated
// the caller and the apiserver authorised the request (RBAC on e.g. virtualmachines/start in
// subresources.kubevirt.io). It acts with its own clients (Clients, Exec: virt-api's service account).
type Handler struct {
	Clients lifecycle.Clients
	// Exec runs `virt-launcher pause|unpause` in a launcher pod.
	Exec lifecycle.Executor
	Log  *slog.Logger
}

// StartOptions, StopOptions, RestartOptions and PauseOptions are KubeVirt's request bodies (kubevirt.io/api
// core/v1), field for field on the wire. Every field is optional and so is the body.
type (
	StartOptions struct {
		metav1.TypeMeta `json:",inline"`
		Paused          bool     `json:"paused,omitempty"`
		DryRun          []string `json:"dryRun,omitempty"`
	}
	StopOptions struct {
		metav1.TypeMeta `json:",inline"`
		// GracePeriod, when set, becomes the VMI's terminationGracePeriodSeconds before it is stopped.
		GracePeriod *int64   `json:"gracePeriod,omitempty"`
		DryRun      []string `json:"dryRun,omitempty"`
	}
	RestartOptions struct {
		metav1.TypeMeta `json:",inline"`
		// GracePeriodSeconds may only be 0 (force restart) or absent.
		GracePeriodSeconds *int64   `json:"gracePeriodSeconds,omitempty"`
		DryRun             []string `json:"dryRun,omitempty"`
	}
	// PauseOptions is also the body of unpause (KubeVirt's UnpauseOptions has the same field).
	PauseOptions struct {
		metav1.TypeMeta `json:",inline"`
		DryRun          []string `json:"dryRun,omitempty"`
	}
)

// vmSubresources and vmiSubresources are the verbs served on virtualmachines and virtualmachineinstances.
var (
	vmSubresources  = []string{"start", "stop", "restart"}
	vmiSubresources = []string{"pause", "unpause"}
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, VersionPath)
	if !ok || (rest != "" && rest[0] != '/') {
		writeError(w, errNoSuchPath)
		return
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case rest == "" || rest == "/":
		h.get(w, r, func() any { return resourceList() })
	case len(parts) == 1 && parts[0] == "version":
		h.get(w, r, func() any { return version.Get() })
	case len(parts) == 1 && parts[0] == "healthz":
		if r.Method != http.MethodGet {
			writeError(w, errMethod)
			return
		}
		h.healthz(w, r)
	case len(parts) == 5 && parts[0] == "namespaces" && parts[1] != "" && parts[3] != "":
		ns, resource, name, sub := parts[1], parts[2], parts[3], parts[4]
		if !served(resource, sub) {
			writeError(w, errNoSuchPath)
			return
		}
		if r.Method != http.MethodPut {
			writeError(w, errMethod)
			return
		}
		h.put(w, r, ns, name, sub)
	default:
		writeError(w, errNoSuchPath)
	}
}

// errNoSuchPath is the apiserver's own 404 for a path nothing serves.
var errNoSuchPath = &apierrors.StatusError{ErrStatus: metav1.Status{
	Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
	Message: "the server could not find the requested resource",
}}

// errMethod is the 405 for a method a path does not take (PUT for the subresources, GET otherwise).
var errMethod = &apierrors.StatusError{ErrStatus: metav1.Status{
	Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed, Reason: metav1.StatusReasonMethodNotAllowed,
	Message: "the server does not allow this method on the requested resource",
}}

func served(resource, sub string) bool {
	switch resource {
	case "virtualmachines":
		return contains(vmSubresources, sub)
	case "virtualmachineinstances":
		return contains(vmiSubresources, sub)
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, body func() any) {
	if r.Method != http.MethodGet {
		writeError(w, errMethod)
		return
	}
	writeJSON(w, http.StatusOK, body())
}

// put runs one lifecycle request. As KubeVirt's handlers: start, stop and restart answer 202 Accepted,
// pause and unpause 200 OK, both without a body; errors are a metav1.Status with KubeVirt's code and
// message.
func (h *Handler) put(w http.ResponseWriter, r *http.Request, ns, name, sub string) {
	ctx := r.Context()
	var err error
	status := http.StatusAccepted
	switch sub {
	case "start":
		var o StartOptions
		if err = decodeBody(r, &o); err == nil {
			err = lifecycle.Apply(ctx, h.Clients, ns, name, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (lifecycle.Plan, error) {
				return lifecycle.StartPlan(vm, vmi, o.Paused)
			}, lifecycle.ApplyOptions{DryRun: o.DryRun})
		}
	case "stop":
		var o StopOptions
		if err = decodeBody(r, &o); err == nil {
			err = lifecycle.Apply(ctx, h.Clients, ns, name, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (lifecycle.Plan, error) {
				return lifecycle.StopPlan(vm, vmi, o.GracePeriod)
			}, lifecycle.ApplyOptions{DryRun: o.DryRun})
		}
	case "restart":
		var o RestartOptions
		if err = decodeBody(r, &o); err == nil {
			if err = lifecycle.RestartGraceCheck(o.GracePeriodSeconds); err == nil {
				err = lifecycle.Apply(ctx, h.Clients, ns, name, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (lifecycle.Plan, error) {
					return lifecycle.RestartPlan(vm, vmi, o.GracePeriodSeconds)
				}, lifecycle.ApplyOptions{DryRun: o.DryRun})
			}
		}
	case "pause", "unpause":
		status = http.StatusOK
		var o PauseOptions
		if err = decodeBody(r, &o); err == nil {
			// KubeVirt honours only a first dryRun entry of "All" here.
			dry := len(o.DryRun) > 0 && o.DryRun[0] == metav1.DryRunAll
			err = lifecycle.PauseVMI(ctx, h.Clients, h.Exec, ns, name, sub == "pause", dry)
		}
	}
	if err != nil {
		h.logf(ctx, sub, ns, name, err)
		writeError(w, err)
		return
	}
	w.WriteHeader(status)
}

func (h *Handler) logf(ctx context.Context, verb, ns, name string, err error) {
	if h.Log == nil {
		return
	}
	var se apierrors.APIStatus
	level := slog.LevelInfo
	if !errors.As(err, &se) || se.Status().Code >= 500 {
		level = slog.LevelWarn
	}
	h.Log.Log(ctx, level, "request refused", "verb", verb, "namespace", ns, "name", name, "err", err)
}

// decodeBody decodes an optional JSON or YAML body into o as KubeVirt does: no body is no options.
func decodeBody(r *http.Request, o any) error {
	if r.Body == nil {
		return nil
	}
	err := yaml.NewYAMLOrJSONDecoder(io.LimitReader(r.Body, maxBody), 1024).Decode(o)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return apierrors.NewBadRequest(fmt.Sprintf(unmarshalBodyFmt, err))
}

// healthz is KubeVirt's GET .../healthz: the apiserver's /version when virt-api reaches it, else a 500.
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	raw, err := h.Clients.Kube.Discovery().RESTClient().Get().AbsPath("/version").Do(r.Context()).Raw()
	var v any
	if err == nil {
		err = json.Unmarshal(raw, &v)
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"apiserver": map[string]any{"connectivity": "failed", "error": err.Error()}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"apiserver": map[string]any{"connectivity": "ok", "version": v}})
}

// writeError writes err as the metav1.Status KubeVirt's virt-api writes (kind Status, apiVersion v1),
// with its code as the HTTP status. An error that is no API status is a 500.
func writeError(w http.ResponseWriter, err error) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	code := int(st.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, st)
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// groupHandler serves GET /apis/subresources.kubevirt.io (the aggregator answers it for clients; virt-api
// serves it too, as KubeVirt's does).
type groupHandler struct{}

func (groupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, errMethod)
		return
	}
	writeJSON(w, http.StatusOK, apiGroup())
}
