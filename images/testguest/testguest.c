/*
 * kvirt test guest: a freestanding x86-64 guest that boots in milliseconds even when guest ring 0 is
 * interpreted (PVM hosts), for lifecycle tests. See images/README.md.
 *
 * Entry (entry.S): 64-bit long mode, first 1 GiB identity-mapped, flat GDT, interrupts off, RSI = physical
 * address of the Linux boot_params; or the PVH 32-bit entry (EBX = hvm_start_info), used by QEMU. It prints "kvirt-guest: ready" and "kvirt-testguest: <action>" on COM1
 * (0x3f8), then performs testguest=<action> from the kernel command line:
 *   poweroff  ACPI S5 (RSDP -> XSDT/RSDT -> FADT -> PM1a_CNT, SLP_TYPa from \_S5_ in the DSDT)
 *   reboot    i8042 reset (0xFE to port 0x64)
 *   crash     triple fault (zero-limit IDT + ud2)
 *   hang      cli; hlt forever
 *   button    set PWRBTN_EN in PM1a_EN, wait for PWRBTN_STS in PM1a_STS, print "kvirt-testguest: power button", then poweroff
 * Errors print "kvirt-testguest: error <what>" and hang.
 *
 * No mutable globals (.bss is not cleared: zeroing it would cost interpreted instructions) and no long
 * loops: every instruction of ring 0 counts on PVM (~1 us each).
 */
#include <stdint.h>
#include <stddef.h>

#define COM1 0x3f8
#define IDENTITY_LIMIT (1ull << 30) /* the VMM identity-maps the first 1 GiB */

/* boot_params offsets (Documentation/x86/zero-page.rst) */
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_CMD_LINE_PTR 0x228

/* FADT offsets (ACPI 6.x, struct acpi_table_fadt) */
#define FADT_DSDT 40
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM1_EVT_LEN 88
#define FADT_FLAGS 112
#define FADT_X_DSDT 140
#define FADT_X_PM1A_EVT_BLK 148
#define FADT_X_PM1A_CNT_BLK 172
#define FADT_SLEEP_CONTROL 244
#define FADT_HW_REDUCED_ACPI (1u << 20)

#define GAS_SPACE_MEMORY 0
#define GAS_SPACE_IO 1

#define PM1_PWRBTN_STS (1u << 8)
#define PM1_PWRBTN_EN (1u << 8)
#define PM1_SLP_EN (1u << 13)

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* gcc may emit calls to these even with -ffreestanding. */
void *memset(void *d, int c, size_t n)
{
	uint8_t *p = d;
	while (n--)
		*p++ = (uint8_t)c;
	return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
	uint8_t *p = d;
	const uint8_t *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static void putc_serial(char c)
{
	/* A VMM's UART is always ready; a real one gets a bounded wait for THR empty. */
	for (int i = 0; i < 1000 && !(inb(COM1 + 5) & 0x20); i++)
		;
	outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
	while (*s)
		putc_serial(*s++);
}

static void say(const char *a, const char *b)
{
	puts_serial("kvirt-testguest: ");
	puts_serial(a);
	if (b)
		puts_serial(b);
	putc_serial('\n');
}

static void puthex(uint64_t v)
{
	char buf[19];
	buf[0] = '0';
	buf[1] = 'x';
	for (int i = 0; i < 16; i++)
		buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
	buf[18] = 0;
	puts_serial(buf);
}

static __attribute__((noreturn)) void hang(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

/*
 * A VMM may finish a poweroff or reset request asynchronously (QEMU does), so give it a moment before
 * reporting that the request did not happen: ~100k pause instructions (~0.1 s interpreted on PVM, a few
 * ms on hardware).
 */
static void settle(void)
{
	for (int i = 0; i < 100000; i++)
		__asm__ volatile("pause");
}

static __attribute__((noreturn)) void fail(const char *what)
{
	say("error ", what);
	hang();
}

static int mem_ok(uint64_t addr, uint64_t len) { return addr != 0 && addr < IDENTITY_LIMIT && len <= IDENTITY_LIMIT - addr; }

static uint8_t rd8(uint64_t a) { return *(volatile const uint8_t *)(uintptr_t)a; }
static uint32_t rd32(uint64_t a) { return *(volatile const uint32_t *)(uintptr_t)a; }
static uint64_t rd64(uint64_t a) { return *(volatile const uint64_t *)(uintptr_t)a; }

static int sig_is(uint64_t a, const char *sig, int n)
{
	for (int i = 0; i < n; i++)
		if (rd8(a + i) != (uint8_t)sig[i])
			return 0;
	return 1;
}

static int checksum_ok(uint64_t a, uint32_t len)
{
	uint8_t sum = 0;
	for (uint32_t i = 0; i < len; i++)
		sum += rd8(a + i);
	return sum == 0;
}

/* ---- command line ---- */

/* Finds "testguest=<value>" on the command line at cl; returns the value's address and length, or 0. */
static const char *find_action(uint64_t cl, int *len)
{
	if (!mem_ok(cl, 4096))
		return 0;
	const char *s = (const char *)(uintptr_t)cl;
	static const char key[] = "testguest=";
	for (int i = 0; i < 4096 && s[i]; i++) {
		if (i > 0 && s[i - 1] != ' ')
			continue;
		int k = 0;
		while (key[k] && s[i + k] == key[k])
			k++;
		if (key[k])
			continue;
		const char *v = s + i + k;
		int n = 0;
		while (n < 64 && v[n] && v[n] != ' ')
			n++;
		*len = n;
		return v;
	}
	return 0;
}

static int streq(const char *a, int alen, const char *b)
{
	int i = 0;
	for (; i < alen && b[i]; i++)
		if (a[i] != b[i])
			return 0;
	return i == alen && !b[i];
}

/* ---- ACPI ---- */

struct pm {
	uint64_t pm1a_cnt;  /* address of PM1a_CNT */
	int pm1a_cnt_space; /* GAS_SPACE_IO or GAS_SPACE_MEMORY */
	uint64_t sleep_ctl; /* HW-reduced: SLEEP_CONTROL_REG (when pm1a_cnt is 0) */
	int sleep_ctl_space;
	uint16_t pm1a_evt; /* I/O port of PM1a_STS (0: none) */
	uint16_t pm1a_en;  /* I/O port of PM1a_EN: PM1a_EVT_BLK + PM1_EVT_LEN/2 */
	uint8_t slp_typa;
};

static uint64_t find_rsdp(uint64_t hint)
{
	uint64_t r = hint;
	if (mem_ok(r, 36) && sig_is(r, "RSD PTR ", 8) && checksum_ok(r, 20))
		return r;
	for (r = 0xE0000; r < 0x100000; r += 16)
		if (sig_is(r, "RSD PTR ", 8) && checksum_ok(r, 20))
			return r;
	return 0;
}

/* Walks XSDT (or RSDT) for a table with the given signature. */
static uint64_t find_table(uint64_t rsdp, const char *sig)
{
	uint64_t sdt = 0;
	int entry = 4;
	if (rd8(rsdp + 15) >= 2 && rd64(rsdp + 24)) {
		sdt = rd64(rsdp + 24);
		entry = 8;
	} else {
		sdt = rd32(rsdp + 16);
	}
	if (!mem_ok(sdt, 36))
		return 0;
	uint32_t len = rd32(sdt + 4);
	if (len < 36 || !mem_ok(sdt, len))
		return 0;
	for (uint32_t off = 36; off + entry <= len; off += entry) {
		uint64_t t = entry == 8 ? rd64(sdt + off) : rd32(sdt + off);
		if (mem_ok(t, 36) && sig_is(t, sig, 4))
			return t;
	}
	return 0;
}

/*
 * SLP_TYPa from the DSDT's \_S5_ object: NameOp '_S5_' PackageOp PkgLength NumElements <SLP_TYPa> ...
 * Returns -1 if absent or malformed.
 */
static int s5_slp_typa(uint64_t dsdt)
{
	uint32_t len = rd32(dsdt + 4);
	if (len < 36 || !mem_ok(dsdt, len))
		return -1;
	for (uint32_t i = 36; i + 8 < len; i++) {
		if (!sig_is(dsdt + i, "_S5_", 4))
			continue;
		uint64_t p = dsdt + i + 4;
		if (rd8(p) != 0x12) /* PackageOp */
			continue;
		p++;
		p += 1 + (rd8(p) >> 6); /* PkgLength: lead byte + 0-3 follow bytes */
		p++;                    /* NumElements */
		if (p >= dsdt + len)
			return -1;
		switch (rd8(p)) {
		case 0x0A: /* BytePrefix */
			return rd8(p + 1) & 7;
		case 0x0B: /* WordPrefix */
		case 0x0C: /* DWordPrefix */
			return rd8(p + 1) & 7;
		case 0x00: /* ZeroOp */
			return 0;
		case 0x01: /* OneOp */
			return 1;
		default:
			return rd8(p) & 7;
		}
	}
	return -1;
}

static void find_pm(uint64_t rsdp_hint, struct pm *pm)
{
	uint64_t rsdp = find_rsdp(rsdp_hint);
	if (!rsdp)
		fail("no ACPI RSDP (boot_params.acpi_rsdp_addr or 0xE0000-0xFFFFF)");
	uint64_t fadt = find_table(rsdp, "FACP");
	if (!fadt)
		fail("no FADT (FACP) in the XSDT/RSDT");
	uint32_t flen = rd32(fadt + 4);

	pm->pm1a_cnt = rd32(fadt + FADT_PM1A_CNT_BLK);
	pm->pm1a_cnt_space = GAS_SPACE_IO;
	if (!pm->pm1a_cnt && flen >= FADT_X_PM1A_CNT_BLK + 12) {
		pm->pm1a_cnt = rd64(fadt + FADT_X_PM1A_CNT_BLK + 4);
		pm->pm1a_cnt_space = rd8(fadt + FADT_X_PM1A_CNT_BLK);
	}
	pm->sleep_ctl = 0;
	if (!pm->pm1a_cnt && flen >= FADT_SLEEP_CONTROL + 12) {
		pm->sleep_ctl = rd64(fadt + FADT_SLEEP_CONTROL + 4);
		pm->sleep_ctl_space = rd8(fadt + FADT_SLEEP_CONTROL);
	}
	if (!pm->pm1a_cnt && !pm->sleep_ctl)
		fail("FADT has no PM1a_CNT_BLK, X_PM1a_CNT_BLK or SLEEP_CONTROL_REG");

	pm->pm1a_evt = (uint16_t)rd32(fadt + FADT_PM1A_EVT_BLK);
	if (!pm->pm1a_evt && flen >= FADT_X_PM1A_EVT_BLK + 12 && rd8(fadt + FADT_X_PM1A_EVT_BLK) == GAS_SPACE_IO)
		pm->pm1a_evt = (uint16_t)rd64(fadt + FADT_X_PM1A_EVT_BLK + 4);
	uint8_t evt_len = rd8(fadt + FADT_PM1_EVT_LEN);
	pm->pm1a_en = pm->pm1a_evt ? (uint16_t)(pm->pm1a_evt + (evt_len >= 4 ? evt_len / 2 : 2)) : 0;

	uint64_t dsdt = 0;
	if (flen >= FADT_X_DSDT + 8)
		dsdt = rd64(fadt + FADT_X_DSDT);
	if (!dsdt)
		dsdt = rd32(fadt + FADT_DSDT);
	if (!mem_ok(dsdt, 36) || !sig_is(dsdt, "DSDT", 4))
		fail("FADT points to no DSDT");
	int typ = s5_slp_typa(dsdt);
	if (typ < 0)
		fail("no \\_S5_ package in the DSDT");
	pm->slp_typa = (uint8_t)typ;
}

static __attribute__((noreturn)) void acpi_poweroff(const struct pm *pm)
{
	if (pm->pm1a_cnt) {
		uint16_t v = (uint16_t)(pm->slp_typa << 10) | PM1_SLP_EN;
		if (pm->pm1a_cnt_space == GAS_SPACE_IO)
			outw((uint16_t)pm->pm1a_cnt, v);
		else if (mem_ok(pm->pm1a_cnt, 2))
			*(volatile uint16_t *)(uintptr_t)pm->pm1a_cnt = v;
	} else {
		/* HW-reduced ACPI: SLEEP_CONTROL_REG, SLP_TYPx in bits 4:2, SLP_EN bit 5. */
		uint8_t v = (uint8_t)((pm->slp_typa & 7) << 2) | (1u << 5);
		if (pm->sleep_ctl_space == GAS_SPACE_IO)
			outb((uint16_t)pm->sleep_ctl, v);
		else if (mem_ok(pm->sleep_ctl, 1))
			*(volatile uint8_t *)(uintptr_t)pm->sleep_ctl = v;
	}
	settle();
	puts_serial("kvirt-testguest: error poweroff did not happen; PM1a_CNT=");
	puthex(pm->pm1a_cnt);
	putc_serial('\n');
	hang();
}

static __attribute__((noreturn)) void triple_fault(void)
{
	struct __attribute__((packed)) {
		uint16_t limit;
		uint64_t base;
	} idt = {0, 0};
	__asm__ volatile("lidt %0; ud2" ::"m"(idt));
	hang();
}

static __attribute__((noreturn)) void run(uint64_t cmdline, uint64_t rsdp_hint)
{
	puts_serial("kvirt-guest: ready\n");
	int n = 0;
	const char *a = find_action(cmdline, &n);
	if (!a || n == 0)
		fail("no testguest=<poweroff|reboot|crash|hang|button> on the command line");

	/* Echo the action. */
	puts_serial("kvirt-testguest: ");
	for (int i = 0; i < n; i++)
		putc_serial(a[i]);
	putc_serial('\n');

	struct pm pm;
	if (streq(a, n, "poweroff")) {
		find_pm(rsdp_hint, &pm);
		acpi_poweroff(&pm);
	} else if (streq(a, n, "reboot")) {
		outb(0x64, 0xFE);
		settle();
		fail("reboot through the i8042 (0xFE to port 0x64) did not happen");
	} else if (streq(a, n, "crash")) {
		triple_fault();
	} else if (streq(a, n, "hang")) {
		hang();
	} else if (streq(a, n, "button")) {
		find_pm(rsdp_hint, &pm);
		if (!pm.pm1a_evt)
			fail("FADT has no PM1a_EVT_BLK I/O port to poll for the power button");
		/* PWRBTN_EN: chipsets (QEMU's PIIX4 too) latch PWRBTN_STS only when enabled. Interrupts stay off,
		 * so no SCI is taken. */
		outw(pm.pm1a_en, inw(pm.pm1a_en) | PM1_PWRBTN_EN);
		while (!(inw(pm.pm1a_evt) & PM1_PWRBTN_STS)) {
			/* Between reads: a short pause loop (each read is a VM exit). */
			for (int i = 0; i < 64; i++)
				__asm__ volatile("pause");
		}
		say("power button", 0);
		acpi_poweroff(&pm);
	}
	fail("unknown testguest= action (want poweroff, reboot, crash, hang or button)");
}

/* Entered from _start (Linux 64-bit boot protocol) with the boot_params address. */
void linux_main(uint64_t bp);
void linux_main(uint64_t bp)
{
	uint64_t cl = 0, rsdp = 0;
	if (mem_ok(bp, 4096)) {
		cl = (uint64_t)rd32(bp + BP_CMD_LINE_PTR) | ((uint64_t)rd32(bp + BP_EXT_CMD_LINE_PTR) << 32);
		rsdp = rd64(bp + BP_ACPI_RSDP_ADDR);
	}
	run(cl, rsdp);
}

/* Entered from pvh_start (PVH boot ABI) with the hvm_start_info address. */
void pvh_main(uint64_t si);
void pvh_main(uint64_t si)
{
	uint64_t cl = 0, rsdp = 0;
	if (mem_ok(si, 40) && rd32(si) == 0x336ec578) {
		cl = rd64(si + 24);
		rsdp = rd64(si + 32);
	}
	run(cl, rsdp);
}
