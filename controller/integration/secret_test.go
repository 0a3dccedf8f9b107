package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Review finding F6: creating a VMI deleted a same-named user Secret ("<vmi>-launcher-token" carrying
// kvirt's label). The controller, with only deploy/rbac's permissions, now leaves a Secret it did not
// create alone and says so in a warning event; once the user removes it, the VMI starts.
func TestUserSecretNamedLikeTheTokenIsKept(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	for _, tc := range []struct {
		vmi    string
		labels map[string]string
	}{
		{"labelled", map[string]string{v1.AppLabel: controller.TokenSecretLabelValue, v1.CreatedByLabel: "someone-else"}},
		{"unlabelled", nil},
	} {
		t.Run(tc.vmi, func(t *testing.T) {
			user, err := e.kube.CoreV1().Secrets(e.ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: controller.TokenSecretName(tc.vmi), Labels: tc.labels},
				Data:       map[string][]byte{"password": []byte("hunter2")},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(ctx, controllertest.VMI(tc.vmi), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, "a FailedCreate warning naming the Secret", 30*time.Second, func() (bool, string) {
				l, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=VirtualMachineInstance,involvedObject.name=" + tc.vmi + ",reason=FailedCreate"})
				if err != nil {
					return false, err.Error()
				}
				var seen []string
				for _, ev := range l.Items {
					if ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "Secret "+e.ns+"/"+user.Name) && strings.Contains(ev.Message, "rename or delete it for the VMI to start") {
						return true, ""
					}
					seen = append(seen, ev.Message)
				}
				return false, fmt.Sprintf("FailedCreate events: %q", seen)
			})
			got, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, user.Name, metav1.GetOptions{})
			if err != nil || got.UID != user.UID || string(got.Data["password"]) != "hunter2" {
				t.Fatalf("the user's Secret was deleted or replaced: %v %+v", err, got)
			}
			pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: v1.VirtualMachineInstanceIDLabel + "=" + tc.vmi})
			if err != nil || len(pods.Items) != 0 {
				t.Fatalf("launcher pods %v (%v): none may exist without kvirt's token secret", pods, err)
			}
			// The user frees the name: the controller's retry creates its own token and the launcher pod.
			if err := e.kube.CoreV1().Secrets(e.ns).Delete(ctx, user.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, "kvirt's token secret and the launcher pod", 60*time.Second, func() (bool, string) {
				s, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, user.Name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				vmi, err := e.getVMI(tc.vmi)
				if err != nil {
					return false, err.Error()
				}
				if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != vmi.UID {
					return false, fmt.Sprintf("secret owner %+v", ref)
				}
				pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: v1.VirtualMachineInstanceIDLabel + "=" + tc.vmi})
				if err != nil {
					return false, err.Error()
				}
				return len(pods.Items) == 1, fmt.Sprintf("%d launcher pods", len(pods.Items))
			})
		})
	}
}
