package app

import "github.com/kvirt/kvirt/lifecycle/lifecycletest"

var (
	testVM  = lifecycletest.VM
	testVMI = lifecycletest.VMI
)
