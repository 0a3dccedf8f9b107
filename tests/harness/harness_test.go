package harness

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) {
	os.Exit(RunShared(m, Options{ControllerManager: true, Progress: os.Stderr}))
}

func TestConfigMapRoundTrip(t *testing.T) {
	cp := Shared(t)
	c := cp.Clientset(t)
	ns := cp.Namespace(t)
	ctx := context.Background()
	want := map[string]string{"greeting": "hello from kvirt"}
	if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "roundtrip"}, Data: want,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "roundtrip", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Data["greeting"] != want["greeting"] {
		t.Fatalf("data = %v, want %v", got.Data, want)
	}

	// The kubeconfig file reaches the same apiserver as the rest.Config.
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", cp.Kubeconfig, err)
	}
	if cfg.Host != cp.URL {
		t.Fatalf("kubeconfig server %s, want %s", cfg.Host, cp.URL)
	}
}

// The controller-manager's garbage collector deletes dependents whose owner is gone.
func TestGarbageCollection(t *testing.T) {
	cp := Shared(t)
	c := cp.Clientset(t)
	ns := cp.Namespace(t)
	ctx := context.Background()
	owner, err := c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create owner: %v", err)
	}
	if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name:            "dependent",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create dependent: %v", err)
	}
	if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete owner: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "dependent", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dependent still present 60s after its owner was deleted (get: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A per-test control plane stops every process and removes its directory.
func TestStartStop(t *testing.T) {
	RequireKubeBinary(t, "")
	dir := filepath.Join(t.TempDir(), "cp")
	cp, err := Start(Options{Dir: dir})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	procs := cp.Processes()
	if len(procs) != 2 {
		t.Fatalf("%d processes, want etcd and kube-apiserver", len(procs))
	}
	if _, err := cp.Clientset(t).Discovery().ServerVersion(); err != nil {
		t.Fatalf("server version: %v", err)
	}
	cp.Stop()
	for _, p := range procs {
		if err := syscall.Kill(p.PID(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after Stop (kill 0: %v)", p.Name, p.PID(), err)
		}
	}
	cp.Stop() // idempotent
}

func TestPKI(t *testing.T) {
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := p.Issue(CertSpec{Name: "srv", CommonName: "srv", Server: true, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("issued certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.CACert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server certificate does not verify for localhost: %v", err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatalf("server certificate lacks 127.0.0.1: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a server-only certificate verified for client auth")
	}
	for _, f := range []string{caCertFile, caKeyFile, saKeyFile, saPubFile, "srv.crt", "srv.key"} {
		if _, err := os.Stat(p.Path(f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}

func TestKubeBinaryMissing(t *testing.T) {
	_, err := KubeBinary(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, ErrNoBinary) {
		t.Fatalf("err = %v, want ErrNoBinary", err)
	}
}

func TestInstallCRDs(t *testing.T) {
	cp := Shared(t)
	path := filepath.Join(t.TempDir(), "crd.yaml")
	crd := `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.kvirt.io
spec:
  group: test.kvirt.io
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
`
	if err := os.WriteFile(path, []byte(crd), 0o644); err != nil {
		t.Fatal(err)
	}
	cp.InstallCRDs(t, path)
	cp.InstallCRDs(t, path) // installing again replaces
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := InstallCRDs(context.Background(), cp.Config, bad); err == nil {
		t.Fatal("a ConfigMap was accepted as a CRD")
	}
}

func TestSweepStaleDirs(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale, err := os.MkdirTemp("", tempDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.MkdirTemp("", tempDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(live)
	defer os.RemoveAll(stale)
	os.WriteFile(filepath.Join(stale, ownerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644)
	os.WriteFile(filepath.Join(live, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
	sweepStaleDirs()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory of a dead owner kept (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("directory of a live owner removed: %v", err)
	}
}
