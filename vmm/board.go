package vmm

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/acpipm"
	"github.com/kvirt/kvirt/vmm/acpi"
	"github.com/kvirt/kvirt/vmm/boot"
	"github.com/kvirt/kvirt/vmm/cpuid"
	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/layout"
	"github.com/kvirt/kvirt/vmm/smbios"
)

// board is one boot of the machine: the KVM VM, its vCPUs and their threads. A reset in place replaces it.
type board struct {
	m     *Machine
	vm    *kvm.VM
	vcpus []*kvm.VCPU
	wg    sync.WaitGroup

	// life guards the vCPU handles against Kick from other goroutines while close unmaps them.
	life   sync.RWMutex
	closed bool
}

// MSRs set on every vCPU at boot.
const (
	msrIA32MiscEnable = 0x1a0
	msrMTRRDefType    = 0x2ff
)

// loadGuest loads the kernel, initrd and firmware tables; it returns the entry point and whether it is the
// PVH entry (32-bit, hvm_start_info) rather than the 64-bit one (boot_params).
func (m *Machine) loadGuest() (entry uint64, pvh bool, err error) {
	kr, ksize, kdone, err := openImage(m.cfg.Kernel, m.cfg.KernelImage)
	if err != nil {
		return 0, false, err
	}
	k, err := boot.LoadKernel(m.mem, kr, ksize)
	kdone()
	if err != nil {
		return 0, false, err
	}
	m.trace("load-kernel")
	ir, isize, idone, err := openImage(m.cfg.Initrd, m.cfg.InitrdImage)
	if err != nil {
		return 0, false, err
	}
	var initrdAddr uint64
	if ir != nil {
		initrdAddr, err = boot.LoadInitrd(m.mem, k, ir, isize)
		idone()
		if err != nil {
			return 0, false, err
		}
		m.trace("load-initrd")
	}
	var rsdp uint64
	if !m.cfg.NoACPI {
		img, addr, err := acpi.Build(m.acpiConfig())
		if err != nil {
			return 0, false, err
		}
		if len(img) > layout.ACPITablesMax {
			return 0, false, fmt.Errorf("vmm: ACPI tables of %d bytes exceed their %d-byte area", len(img), layout.ACPITablesMax)
		}
		if _, err := m.mem.WriteAt(img, layout.ACPITablesAddr); err != nil {
			return 0, false, fmt.Errorf("vmm: write ACPI tables: %w", err)
		}
		rsdp = addr
	}
	// The MP table is written with ACPI too (as QEMU microvm and Firecracker do): Linux looks for its floating
	// pointer before it reads the MADT, and when there is none it scans the whole 64 KiB BIOS area, remapping
	// at every 16-byte step (1.4 s of a 15 s boot where the guest kernel is interpreted, PVM). Found in the
	// top KiB of base RAM, the scan ends at its second step; with ACPI the kernel then takes the MADT. A table
	// too large for that KiB (about 50 vCPUs) is needed only without ACPI.
	if img, err := MPTable(m.cfg.apicIDs()); err == nil {
		if _, err := m.mem.WriteAt(img, layout.MPTableAddr); err != nil {
			return 0, false, fmt.Errorf("vmm: write MP table: %w", err)
		}
	} else if m.cfg.NoACPI {
		return 0, false, err
	}
	sm, err := smbios.Build(m.cfg.SMBIOS, layout.SMBIOSAddr)
	if err != nil {
		return 0, false, err
	}
	if _, err := m.mem.WriteAt(sm, layout.SMBIOSAddr); err != nil {
		return 0, false, fmt.Errorf("vmm: write SMBIOS: %w", err)
	}
	cmdline := m.cmdline
	if m.cfg.NoACPI {
		cmdline += " acpi=off"
		for _, v := range m.virtio {
			cmdline += fmt.Sprintf(" virtio_mmio.device=%#x@%#x:%d", v.Size, v.Base, v.GSI)
		}
	}
	if err := boot.WriteZeroPage(m.mem, boot.Params{Kernel: k, Cmdline: cmdline, InitrdAddr: initrdAddr,
		InitrdSize: uint64(isize), E820: boot.E820Map(m.mem), RSDP: rsdp}); err != nil {
		return 0, false, err
	}
	if err := boot.WriteBootTables(m.mem); err != nil {
		return 0, false, err
	}
	if m.cfg.PVH {
		if k.PVHEntry == 0 {
			return 0, false, fmt.Errorf("vmm: PVH boot asked for, but the kernel declares no PVH entry (XEN_ELFNOTE_PHYS32_ENTRY; Linux needs CONFIG_PVH)")
		}
		if err := boot.WritePVHStartInfo(m.mem, boot.Params{Kernel: k, InitrdAddr: initrdAddr, InitrdSize: uint64(isize),
			E820: boot.E820Map(m.mem), RSDP: rsdp}); err != nil {
			return 0, false, err
		}
		m.trace("boot-tables")
		return uint64(k.PVHEntry), true, nil
	}
	m.trace("boot-tables")
	return k.Entry, false, nil
}

// acpiConfig describes the platform for the ACPI tables.
func (m *Machine) acpiConfig() acpi.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	var vs []acpi.VirtioMMIO
	for _, v := range m.virtio {
		vs = append(vs, acpi.VirtioMMIO{Base: v.Base, Size: uint32(v.Size), GSI: v.GSI})
	}
	return acpi.Config{
		Addr: layout.ACPITablesAddr, CPUs: m.cfg.CPUs, APICIDs: m.cfg.apicIDs(), LAPICAddr: layout.LAPICAddr,
		IOAPICAddr: layout.IOAPICAddr, SCI: layout.IRQSCI, PM1aEvt: layout.PortPM1aEvt,
		PM1aCnt: layout.PortPM1aCnt, PM1EvtLen: layout.PM1EvtLen, PM1CntLen: layout.PM1CntLen,
		S5Type: acpipm.S5Type, COM1: true, Virtio: vs,
	}
}

// newBoard creates the KVM VM, loads the guest and prepares the vCPUs (not yet running).
func (m *Machine) newBoard() (_ *board, err error) {
	// Load the guest into memory while KVM builds the VM and vCPUs (each takes about a millisecond, more on a
	// busy host); the boot CPU's registers are set once the entry point is known.
	type loaded struct {
		entry uint64
		pvh   bool
		err   error
	}
	lc := make(chan loaded, 1)
	go func() {
		e, pvh, err := m.loadGuest()
		lc <- loaded{e, pvh, err}
	}()
	waited := false
	waitLoad := func() (loaded, error) {
		waited = true
		r := <-lc
		return r, r.err
	}
	defer func() {
		if !waited { // never leave the loader writing to memory that may be unmapped next
			<-lc
		}
	}()
	vm, err := m.sys.CreateVM()
	if err != nil {
		return nil, err
	}
	m.trace("create-vm")
	b := &board{m: m, vm: vm}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if err := vm.SetTSSAddr(layout.TSSAddr); err != nil {
		m.logf("vmm: %v (ignored)", err)
	}
	// Memory slots before the irqchip: once the irqchip exists, KVM_SET_USER_MEMORY_REGION waits for an
	// RCU grace period (~7 ms measured on PVM hosts, a sleep rather than work); before, it takes ~0.1 ms.
	for i, r := range m.mem.Regions() {
		if err := vm.SetUserMemoryRegion(uint32(i), r.GPA, r.Data); err != nil {
			return nil, err
		}
	}
	m.trace("memslots")
	if err := vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err := vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return nil, err
	}
	m.trace("irqchip-pit")
	m.mu.Lock()
	irqfds, ioevents := m.irqfds, m.ioevents
	m.mu.Unlock()
	for _, q := range irqfds {
		if err := vm.IRQFD(int(q.efd.Fd()), q.GSI, 0); err != nil {
			return nil, err
		}
	}
	for _, e := range ioevents {
		if err := vm.IOEventFD(int(e.efd.Fd()), e.addr, 4, e.datamatch, kvm.IOEventFDDataMatch); err != nil {
			return nil, err
		}
	}
	// KVM takes the vCPU id as the local APIC's ID: the topology's, so the guest's MADT and CPUID agree.
	for i, apicID := range m.cfg.topology().APICIDs() {
		c, err := vm.CreateVCPU(int(apicID))
		if err != nil {
			return nil, err
		}
		b.vcpus = append(b.vcpus, c)
		if err := m.setupVCPU(c, i); err != nil {
			return nil, err
		}
	}
	m.trace("vcpus")
	l, err := waitLoad()
	if err != nil {
		return nil, err
	}
	regs := boot.BootRegs(l.entry)
	if l.pvh { // 32-bit protected mode instead of the long mode setupVCPU prepared
		s, err := b.vcpus[0].GetSregs()
		if err != nil {
			return nil, err
		}
		boot.PVHSregs(&s)
		if err := b.vcpus[0].SetSregs(s); err != nil {
			return nil, err
		}
		regs = boot.PVHRegs(l.entry)
	}
	if err := b.vcpus[0].SetRegs(regs); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.board = b
	m.mu.Unlock()
	return b, nil
}

// setupVCPU sets CPUID, MSRs and LAPIC of vCPU index id, and for the boot CPU the long-mode state (its
// registers are set by newBoard once the kernel is loaded).
func (m *Machine) setupVCPU(c *kvm.VCPU, id int) error {
	ids, err := cpuid.ForVCPU(m.cpuids, m.cfg.topology(), id, m.policy)
	if err != nil {
		return err
	}
	if err := c.SetCPUID2(ids); err != nil {
		return err
	}
	// Fast strings on, MTRRs enabled with write-back default. Some hosts (PVM) refuse these; the guest
	// boots without them, so note it once.
	for _, msr := range []kvm.MSR{{Index: msrIA32MiscEnable, Data: 1}, {Index: msrMTRRDefType, Data: 1<<11 | 6}} {
		if err := c.SetMSRs([]kvm.MSR{msr}); err != nil && id == 0 {
			m.logf("vmm: host refused boot MSR %#x (ignored)", msr.Index)
		}
	}
	// LAPIC: LINT0 delivers ExtINT (the PIC), LINT1 NMI.
	l, err := c.GetLAPIC()
	if err != nil {
		return err
	}
	setMode := func(off int, mode uint32) {
		v := uint32(l.Regs[off]) | uint32(l.Regs[off+1])<<8 | uint32(l.Regs[off+2])<<16 | uint32(l.Regs[off+3])<<24
		v = v&^0x700 | mode<<8
		l.Regs[off], l.Regs[off+1], l.Regs[off+2], l.Regs[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	setMode(0x350, 7)
	setMode(0x360, 4)
	if err := c.SetLAPIC(l); err != nil {
		return err
	}
	if id != 0 {
		return nil // application processors wait for INIT/SIPI from the boot CPU
	}
	s, err := c.GetSregs()
	if err != nil {
		return err
	}
	boot.LongModeSregs(&s)
	if err := c.SetSregs(s); err != nil {
		return err
	}
	return c.SetFPU(boot.BootFPU())
}

func (b *board) kickAll() {
	b.life.RLock()
	defer b.life.RUnlock()
	if b.closed {
		return
	}
	for _, c := range b.vcpus {
		c.Kick()
	}
}

func (b *board) start() {
	for _, c := range b.vcpus {
		b.wg.Add(1)
		go b.run(c)
	}
}

func (b *board) close() {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, c := range b.vcpus {
		c.Close()
	}
	b.vm.Close()
}

// wait parks the vCPU while the machine is paused; it reports false when the board must end.
func (b *board) wait() bool {
	m := b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.exitReq != nil {
		return false
	}
	if !m.paused {
		return true
	}
	m.parked++
	m.cond.Broadcast()
	for m.paused && m.exitReq == nil {
		m.cond.Wait()
	}
	m.parked--
	return m.exitReq == nil
}

// run is one vCPU's loop, on a locked OS thread.
func (b *board) run(c *kvm.VCPU) {
	defer b.wg.Done()
	defer runtimeLock()()
	c.BindThread()
	defer c.UnbindThread()
	m := b.m
	first := c.ID == 0 && m.cfg.OnFirstRun != nil && m.Reboots() == 0
	for {
		c.ClearImmediateExit()
		if !b.wait() {
			return
		}
		if first {
			first = false
			m.cfg.OnFirstRun()
		}
		err := c.RunOnce()
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			m.requestExit(Error, fmt.Errorf("vmm: vCPU %d: KVM_RUN: %w", c.ID, err))
			return
		}
		if !b.handleExit(c) {
			return
		}
	}
}

// handleExit dispatches one exit; false ends the vCPU loop.
func (b *board) handleExit(c *kvm.VCPU) bool {
	m := b.m
	r := c.Run
	switch r.ExitReason {
	case kvm.ExitIO:
		io := r.IO()
		data := c.RunData()
		size := uint64(io.Size)
		off := io.DataOffset
		if size == 0 || size > 8 || off+size*uint64(io.Count) > uint64(len(data)) {
			m.requestExit(Error, fmt.Errorf("vmm: vCPU %d: malformed I/O exit (port %#x size %d count %d)", c.ID, io.Port, io.Size, io.Count))
			return false
		}
		for i := uint64(0); i < uint64(io.Count); i++ {
			d := data[off+i*size : off+(i+1)*size]
			if io.Direction == kvm.IOOut {
				m.PIO.Write(uint64(io.Port), d)
			} else {
				m.PIO.Read(uint64(io.Port), d)
			}
		}
	case kvm.ExitMMIO:
		addr, d, write := r.MMIO()
		if write {
			m.MMIO.Write(addr, d)
		} else {
			m.MMIO.Read(addr, d)
		}
	case kvm.ExitIntr, kvm.ExitHLT, kvm.ExitIRQWindowOpen:
	case kvm.ExitShutdown:
		m.requestExit(Crashed, fmt.Errorf("vmm: vCPU %d: triple fault (KVM_EXIT_SHUTDOWN)\n%s", c.ID, dumpRegs(c)))
		return false
	case kvm.ExitInternalError:
		sub, data := r.InternalError()
		m.requestExit(Crashed, fmt.Errorf("vmm: vCPU %d: KVM internal error %d (1 = emulation failure: an instruction the host cannot emulate) data %#x\n%s",
			c.ID, sub, data, dumpRegs(c)))
		return false
	case kvm.ExitFailEntry:
		m.requestExit(Crashed, fmt.Errorf("vmm: vCPU %d: VM entry failed (reason %#x)\n%s", c.ID, r.FailEntry(), dumpRegs(c)))
		return false
	case kvm.ExitSystemEvent:
		switch r.SystemEvent() {
		case kvm.SystemEventShutdown:
			m.requestExit(PoweredOff, nil)
		case kvm.SystemEventReset:
			m.guestReset()
		default:
			m.requestExit(Crashed, fmt.Errorf("vmm: vCPU %d: guest crash event %d\n%s", c.ID, r.SystemEvent(), dumpRegs(c)))
		}
		return false
	default:
		m.requestExit(Error, fmt.Errorf("vmm: vCPU %d: unexpected KVM exit %d\n%s", c.ID, r.ExitReason, dumpRegs(c)))
		return false
	}
	return true
}

func dumpRegs(c *kvm.VCPU) string {
	r, err := c.GetRegs()
	if err != nil {
		return "registers unavailable: " + err.Error()
	}
	s, err := c.GetSregs()
	if err != nil {
		return "special registers unavailable: " + err.Error()
	}
	return fmt.Sprintf("rip=%#x rsp=%#x rflags=%#x rax=%#x rbx=%#x rcx=%#x rdx=%#x rsi=%#x rdi=%#x rbp=%#x\n"+
		"cr0=%#x cr2=%#x cr3=%#x cr4=%#x efer=%#x cs=%#x(base %#x) ss=%#x",
		r.RIP, r.RSP, r.RFLAGS, r.RAX, r.RBX, r.RCX, r.RDX, r.RSI, r.RDI, r.RBP,
		s.CR0, s.CR2, s.CR3, s.CR4, s.EFER, s.CS.Selector, s.CS.Base, s.SS.Selector)
}
