// Command virtctl drives kvirt virtual machines with KubeVirt's verbs; see package app.
package main

import (
	"os"

	"github.com/kvirt/kvirt/cmd/virtctl/app"
)

func main() { os.Exit(app.Main()) }
