package app

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// lastAppliedAnnotation is kubectl's record of the applied manifest; it names the old VM, so the renamed
// copy does not inherit it.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// RenameCheck says whether vm may be renamed: only a stopped VM can be. vmi is the VM's instance or nil.
// A VM is stopped when it has no instance that still runs and nothing will start one by itself
// (runStrategy Always restarts it; Once starts it while it has never run).
func RenameCheck(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, newName string) error {
	if newName == vm.Name {
		return fmt.Errorf("the new name %q is the VM's current name; choose another", newName)
	}
	if vmi != nil && !vmi.IsFinal() {
		return fmt.Errorf("VirtualMachine %s is not stopped (its VMI is %s); stop it first: virtctl stop %s",
			vm.Name, phaseOrPending(vmi), vm.Name)
	}
	rs, err := vm.RunStrategy()
	if err != nil {
		return err
	}
	if rs == v1.RunStrategyAlways || (rs == v1.RunStrategyOnce && vmi == nil) {
		return fmt.Errorf("VirtualMachine %s is set to run (runStrategy %s); stop it first: virtctl stop %s", vm.Name, rs, vm.Name)
	}
	return nil
}

func phaseOrPending(vmi *v1.VirtualMachineInstance) string {
	if vmi.Status.Phase == v1.VmPhaseUnset {
		return string(v1.Pending)
	}
	return string(vmi.Status.Phase)
}

// RenamedCopy returns the VM to create under newName: the stored VM's labels, annotations and spec, as
// stored, so fields kvirt's Go types do not model (kept by the CRD's preserve-unknown-fields) survive;
// no status and no server-set metadata.
func RenamedCopy(vm *unstructured.Unstructured, newName string) *unstructured.Unstructured {
	n := &unstructured.Unstructured{Object: map[string]any{}}
	n.SetAPIVersion(vm.GetAPIVersion())
	n.SetKind(vm.GetKind())
	n.SetName(newName)
	n.SetNamespace(vm.GetNamespace())
	n.SetLabels(vm.GetLabels())
	ann := vm.GetAnnotations()
	delete(ann, lastAppliedAnnotation)
	n.SetAnnotations(ann)
	if spec, ok := vm.Object["spec"]; ok {
		n.Object["spec"] = runtime.DeepCopyJSONValue(spec)
	}
	return n
}

func newRenameCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "rename vm OLD NEW",
		Short: "Rename a stopped virtual machine.",
		Long: `Renames a stopped virtual machine: creates the same VirtualMachine under the new name and deletes the
old one. A running VM (or one whose runStrategy would start it) is refused; stop it first.`,
		Example:           e.example("# Rename the stopped virtual machine 'myvm' to 'web':", "{{virtctl}} rename vm myvm web"),
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: e.completeKindName("vm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resourceKind(args[0])
			if err != nil {
				return err
			}
			if kind != "vm" {
				return fmt.Errorf("only VirtualMachines can be renamed, not %s", args[0])
			}
			args = args[1:]
			return e.rename(cmd.Context(), args[0], args[1])
		},
	}
}

func (e *env) rename(ctx context.Context, oldName, newName string) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	if c.Dynamic == nil {
		return fmt.Errorf("error renaming VirtualMachine: no dynamic client (Clients.Dynamic)")
	}
	// The VM is read and copied untyped: a typed copy would drop every field kvirt does not model.
	vms := c.Dynamic.Resource(v1.GroupVersion.WithResource("virtualmachines")).Namespace(c.Namespace)
	stored, err := vms.Get(ctx, oldName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("error fetching VirtualMachine: %v", err)
	}
	var vm v1.VirtualMachine
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(stored.Object, &vm); err != nil {
		return fmt.Errorf("error fetching VirtualMachine: decode %s: %v", oldName, err)
	}
	vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Get(ctx, oldName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		vmi = nil
	} else if err != nil {
		return fmt.Errorf("error fetching VirtualMachineInstance: %v", err)
	}
	if err := RenameCheck(&vm, vmi, newName); err != nil {
		return fmt.Errorf("error renaming VirtualMachine: %v", err)
	}
	if _, err := vms.Create(ctx, RenamedCopy(stored, newName), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("error renaming VirtualMachine: %v", err)
	}
	// Delete exactly the VM we checked (not a same-named successor); if that fails, undo the copy.
	uid := vm.UID
	err = vms.Delete(ctx, oldName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil {
		if derr := vms.Delete(ctx, newName, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			return fmt.Errorf("error renaming VirtualMachine: delete %s: %v; the copy %s also remains (delete it by hand): %v", oldName, err, newName, derr)
		}
		return fmt.Errorf("error renaming VirtualMachine: delete %s: %v (nothing was changed; retry)", oldName, err)
	}
	fmt.Fprintf(e.Out, "VM %s was renamed to %s\n", oldName, newName)
	return nil
}
