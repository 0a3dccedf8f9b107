// Command kvmcheck says whether this host's KVM can run kvirt guests: it prints one line and exits 0
// when /dev/kvm is usable, 1 when it is not (the line says why). `.ci/run` and `just demo` use it.
package main

import (
	"fmt"
	"os"

	"github.com/kvirt/kvirt/tests/testenv"
)

func main() {
	if err := testenv.ProbeKVM(); err != nil {
		fmt.Println("unusable:", err)
		os.Exit(1)
	}
	kind := "hardware virtualization"
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		kind = "PVM: guest kernel code is interpreted, Linux boots take tens of seconds"
	}
	fmt.Printf("usable: /dev/kvm (%s)\n", kind)
}
