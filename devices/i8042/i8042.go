// Package i8042 models the little of the PS/2 keyboard controller a guest without a keyboard uses:
// the command byte, and the 0xFE "pulse reset line" command that Linux's reboot=k issues.
package i8042

import "sync"

// Bus offsets from port 0x60.
const (
	OffData   = 0
	OffStatus = 4 // status on read, command on write (port 0x64)
	// Size is the bus range to map at port 0x60 (ports 0x60-0x64; 0x61 belongs to the in-kernel PIT).
	Size = 5

	cmdReadCmdByte  = 0x20
	cmdWriteCmdByte = 0x60
	cmdSelfTest     = 0xaa
	cmdResetCPU     = 0xfe
	statusOutFull   = 0x01
	statusSysFlag   = 0x04
	statusCmd       = 0x08
)

// Controller is the i8042; it implements bus.Device.
type Controller struct {
	mu      sync.Mutex
	reset   func()
	cmdByte uint8
	pending int // command awaiting a data byte (0 = none)
	out     []byte
	status  uint8
}

// New returns a controller that calls reset (on the vCPU thread) when the guest asks for a CPU reset.
func New(reset func()) *Controller {
	return &Controller{reset: reset, cmdByte: 0x45, status: statusSysFlag}
}

// Read implements bus.Device.
func (c *Controller) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch off {
	case OffData:
		if len(c.out) > 0 {
			data[0] = c.out[0]
			c.out = c.out[1:]
		}
	case OffStatus:
		s := c.status
		if len(c.out) > 0 {
			s |= statusOutFull
		}
		data[0] = s
	}
}

// Write implements bus.Device.
func (c *Controller) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	var reset func()
	c.mu.Lock()
	switch off {
	case OffData:
		if c.pending == cmdWriteCmdByte {
			c.cmdByte = v
		}
		c.pending = 0
		c.status &^= statusCmd
	case OffStatus:
		c.status |= statusCmd
		switch v {
		case cmdReadCmdByte:
			c.push(c.cmdByte)
		case cmdWriteCmdByte:
			c.pending = int(v)
		case cmdSelfTest:
			c.push(0x55)
		case cmdResetCPU:
			reset = c.reset
		}
	}
	c.mu.Unlock()
	if reset != nil {
		reset()
	}
}

func (c *Controller) push(b byte) {
	if len(c.out) < 16 {
		c.out = append(c.out, b)
	}
}
