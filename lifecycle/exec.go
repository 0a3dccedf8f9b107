package lifecycle

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// The launcher side of pause, unpause and console. virtctl (all three, with the user's credentials) and
// virt-api (pause, unpause, with its own) run these inside the VMI's launcher pod (container
// LauncherContainer) through pod exec; cmd/virt-launcher must provide them:
//
//	virt-launcher pause     pause the guest's vCPUs; exit 0 once paused, else print the reason on stderr, exit ≠ 0
//	virt-launcher unpause   resume them; same convention
//	virt-launcher console   copy stdin to the guest's serial console and its output to stdout, raw
//	                        bytes, until stdin ends (no TTY: virtctl puts the user's terminal in raw mode)
//
// Each talks to the launcher's control API on its Unix socket inside the pod (launcher/control).
const (
	LauncherContainer = "compute"
	LauncherBinary    = "virt-launcher"
)

// ExecRequest is one command run in a container, with optional streams (nil = not attached).
type ExecRequest struct {
	Namespace, Pod, Container string
	Command                   []string
	Stdin                     io.Reader
	Stdout, Stderr            io.Writer
}

// Executor runs a command in a pod and returns when it ends or ctx is cancelled. A non-zero exit status
// is an error.
type Executor interface {
	Exec(ctx context.Context, r ExecRequest) error
}

// NewSPDYExecutor returns the Executor that runs commands through the apiserver with cfg's credentials.
func NewSPDYExecutor(cfg *rest.Config, kube kubernetes.Interface) Executor {
	return &spdyExecutor{config: cfg, kube: kube}
}

// spdyExecutor is pod exec through the apiserver (the pods/exec subresource over SPDY), the same path
// `kubectl exec` takes, authorised by the caller's RBAC.
type spdyExecutor struct {
	config *rest.Config
	kube   kubernetes.Interface
}

func (x *spdyExecutor) Exec(ctx context.Context, r ExecRequest) error {
	req := x.kube.CoreV1().RESTClient().Post().
		Namespace(r.Namespace).Resource("pods").Name(r.Pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: r.Container,
			Command:   r.Command,
			Stdin:     r.Stdin != nil,
			Stdout:    r.Stdout != nil,
			Stderr:    r.Stderr != nil,
		}, scheme.ParameterCodec)
	exec, err := remotecommand.NewSPDYExecutor(x.config, "POST", req.URL())
	if err != nil {
		return fmt.Errorf("exec in pod %s/%s: %w", r.Namespace, r.Pod, err)
	}
	return exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr})
}
