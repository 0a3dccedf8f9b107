// Command kubectl-virt is virtctl as a kubectl plugin: `kubectl virt start my-vm`.
package main

import (
	"os"

	"github.com/kvirt/kvirt/cmd/virtctl/app"
)

func main() { os.Exit(app.Main()) }
