// Package acpipm models the ACPI fixed-hardware PM1a event and control registers: the guest powers off by
// writing SLP_TYP=S5 with SLP_EN, and the VMM presses the power button by setting PWRBTN_STS, which raises
// the (level-triggered) SCI while enabled.
package acpipm

import "sync"

// Register layout: the event block is 4 bytes (status word, enable word); the control block 2 bytes.
const (
	EvtLen = 4
	CntLen = 2

	PwrBtnSts = 1 << 8
	PwrBtnEn  = 1 << 8
	SCIEn     = 1 << 0
	SlpEn     = 1 << 13
	// S5Type is the SLP_TYP value the DSDT's \_S5 package announces.
	S5Type = 5
)

// Line is a level-triggered interrupt line (the SCI).
type Line interface{ SetLevel(high bool) error }

// PM holds the PM1a registers. Event and Control return the bus devices for the two blocks.
type PM struct {
	mu       sync.Mutex
	sts, en  uint16
	cnt      uint16
	sci      Line
	level    bool
	poweroff func()
}

// New returns a PM block that raises sci and calls poweroff (on the vCPU thread) on S5.
func New(sci Line, poweroff func()) *PM { return &PM{sci: sci, poweroff: poweroff, cnt: SCIEn} }

// update drives the SCI level from status & enable; call with mu held.
func (p *PM) update() {
	lvl := p.sts&p.en != 0
	if lvl != p.level && p.sci != nil {
		_ = p.sci.SetLevel(lvl)
	}
	p.level = lvl
}

// Reset returns the registers to their power-on state (the VMM calls it when the guest is reset).
func (p *PM) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts, p.en, p.cnt = 0, 0, SCIEn
	p.update()
}

// PressPowerButton latches a power-button event (PWRBTN_STS) and raises the SCI if enabled.
func (p *PM) PressPowerButton() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= PwrBtnSts
	p.update()
}

// Event is the PM1a_EVT block device.
func (p *PM) Event() *EventBlock { return (*EventBlock)(p) }

// Control is the PM1a_CNT block device.
func (p *PM) Control() *ControlBlock { return (*ControlBlock)(p) }

// EventBlock implements bus.Device for PM1a_EVT_BLK.
type EventBlock PM

func put(data []byte, v uint32) {
	for i := range data {
		if i < 4 {
			data[i] = byte(v >> (8 * i))
		} else {
			data[i] = 0
		}
	}
}

// Read implements bus.Device.
func (e *EventBlock) Read(off uint64, data []byte) {
	p := (*PM)(e)
	p.mu.Lock()
	defer p.mu.Unlock()
	regs := uint32(p.sts) | uint32(p.en)<<16
	if off >= EvtLen {
		put(data, 0)
		return
	}
	put(data, regs>>(8*off))
}

// Write implements bus.Device: status bits are write-one-to-clear, enable bits plain.
func (e *EventBlock) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	p := (*PM)(e)
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range data {
		o := off + uint64(i)
		b := uint16(data[i])
		switch o {
		case 0:
			p.sts &^= b
		case 1:
			p.sts &^= b << 8
		case 2:
			p.en = p.en&0xff00 | b
		case 3:
			p.en = p.en&0x00ff | b<<8
		}
	}
	p.update()
}

// ControlBlock implements bus.Device for PM1a_CNT_BLK.
type ControlBlock PM

// Read implements bus.Device.
func (c *ControlBlock) Read(off uint64, data []byte) {
	p := (*PM)(c)
	p.mu.Lock()
	defer p.mu.Unlock()
	if off >= CntLen {
		put(data, 0)
		return
	}
	put(data, uint32(p.cnt)>>(8*off))
}

// Write implements bus.Device. SLP_EN with SLP_TYP=S5 powers the machine off.
func (c *ControlBlock) Write(off uint64, data []byte) {
	if len(data) == 0 || off >= CntLen {
		return
	}
	p := (*PM)(c)
	p.mu.Lock()
	v := p.cnt
	if off == 0 {
		v = v&0xff00 | uint16(data[0])
		if len(data) > 1 {
			v = v&0x00ff | uint16(data[1])<<8
		}
	} else {
		v = v&0x00ff | uint16(data[0])<<8
	}
	off5 := v&SlpEn != 0 && (v>>10)&7 == S5Type
	p.cnt = v&^SlpEn | SCIEn
	p.mu.Unlock()
	if off5 && p.poweroff != nil {
		p.poweroff()
	}
}
