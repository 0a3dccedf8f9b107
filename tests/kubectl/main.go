// Command kubectl is Kubernetes' kubectl at the version of the local cluster (tests/cluster), for hosts
// that have none: `.ci/install` builds it from the Go module proxy when `kubectl` is not on PATH.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand())
}
