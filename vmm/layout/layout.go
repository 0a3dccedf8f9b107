// Package layout names the x86-64 guest-physical memory map and the legacy I/O ports kvirt's VMM uses.
//
// Low RAM starts at 0; the boot structures live in the first megabyte; the kernel is loaded at 1 MiB
// (or its ELF physical addresses); the initrd sits at the top of low RAM. RAM above MMIOStart is moved
// above 4 GiB so the window for MMIO devices, the IOAPIC and the LAPIC stays free.
package layout

const (
	// Boot structures (all below 1 MiB).
	GDTAddr         = 0x500    // GDT: null, code64, data, tss
	IDTAddr         = 0x520    // an empty IDT (limit 0) for the boot CPU
	ZeroPageAddr    = 0x7000   // Linux boot_params ("zero page")
	PVHStartInfo    = 0x6000   // hvm_start_info for the PVH entry
	PVHMemmap       = 0x6100   // hvm_memmap_table_entry array for PVH
	BootStackTop    = 0x8ff0   // initial stack pointer for the boot CPU
	PML4Addr        = 0x9000   // identity page tables: PML4, PDPT, PDs (4 pages)
	PDPTAddr        = 0xa000   //
	PDAddr          = 0xb000   // 4 page directories of 2 MiB pages: first 4 GiB identity mapped
	CmdlineAddr     = 0x20000  // kernel command line
	CmdlineMax      = 0x10000  // command line size limit (bytes incl. NUL)
	EBDAStart       = 0x9fc00  // start of the extended BIOS data area: RAM below it is usable
	MPTableAddr     = 0x9fc00  // MP floating pointer + config table (when ACPI is off)
	BIOSStart       = 0xe0000  // start of the BIOS read-only area
	ACPITablesAddr  = 0xe0000  // RSDP and the other ACPI tables (RSDP must be in 0xE0000-0xFFFFF)
	ACPITablesMax   = 0x10000  // room for ACPI tables
	SMBIOSAddr      = 0xf0000  // SMBIOS entry point and structures
	SMBIOSMax       = 0x10000  //
	HighMemStart    = 0x100000 // 1 MiB: kernel load address
	KernelLoadAddr  = 0x100000 // bzImage protected-mode code
	MMIOStart       = 0xd0000000
	MMIOSize        = 0x0ec00000 // up to IOAPIC
	VirtioMMIOBase  = 0xd0000000 // first virtio-mmio device; each takes VirtioMMIOSize
	VirtioMMIOSize  = 0x1000     // bus range per device (guest sees 0x200 bytes of registers)
	IOAPICAddr      = 0xfec00000
	LAPICAddr       = 0xfee00000
	TSSAddr         = 0xfffbd000 // KVM_SET_TSS_ADDR (3 pages)
	IdentityMapAddr = 0xfffbc000 // KVM_SET_IDENTITY_MAP_ADDR
	FourGiB         = 0x100000000

	// I/O ports.
	PortCOM1    = 0x3f8
	PortCOM2    = 0x2f8
	PortCMOS    = 0x70  // RTC/CMOS index; data at 0x71
	PortI8042   = 0x60  // data; status/command at 0x64
	PortPM1aEvt = 0x600 // PM1a event block (4 bytes: status, enable)
	PortPM1aCnt = 0x604 // PM1a control block (2 bytes)
	PortPMTmr   = 0x608 // PM timer (unused, declared 0)
	PM1EvtLen   = 4
	PM1CntLen   = 2

	// Interrupt lines (GSIs on the IOAPIC / PIC).
	IRQCOM1      = 4
	IRQCOM2      = 3
	IRQSCI       = 9
	IRQFirstFree = 5 // first GSI handed out for MMIO devices (skipping used legacy lines)
	IRQMax       = 23
)

// UsableGSIs are the IOAPIC lines AllocateGSI hands out to devices, in order.
var UsableGSIs = []uint32{5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}
