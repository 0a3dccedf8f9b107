package vmm

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/testenv"
)

func startTestGuest(t *testing.T, action string, mod func(*Config)) (*Machine, *console) {
	t.Helper()
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, "testguest")
	con := newConsole(t)
	cfg := Config{Kernel: kernel, Cmdline: "testguest=" + action, MemoryBytes: 64 << 20, Console: con, Logf: t.Logf}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := m.Wait(ctx); err == context.DeadlineExceeded {
			t.Errorf("machine did not stop within 30 s")
		}
	})
	return m, con
}

func wait(t *testing.T, m *Machine, timeout time.Duration) (Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	o, err := m.Wait(ctx)
	if err == context.DeadlineExceeded {
		t.Fatalf("machine still running after %v", timeout)
	}
	return o, err
}

const testGuestTimeout = 60 * time.Second

func TestTestGuestPowerOff(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "poweroff", nil)
	con.expect(t, "kvirt-guest: ready", testGuestTimeout)
	o, err := wait(t, m, testGuestTimeout)
	if o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}

func TestTestGuestReboot(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "reboot", nil)
	if !con.expectN("kvirt-guest: ready", 2, testGuestTimeout) {
		t.Fatalf("guest did not come up twice; console:\n%s", tail(con.String()))
	}
	if m.Reboots() < 1 {
		t.Fatalf("reboots = %d", m.Reboots())
	}
	m.Stop()
	if o, err := wait(t, m, testGuestTimeout); o != Stopped || err != nil {
		t.Fatalf("outcome %v (%v), want Stopped", o, err)
	}
}

func TestTestGuestRebootExit(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "reboot", func(c *Config) { c.OnReboot = RebootExit })
	if o, err := wait(t, m, testGuestTimeout); o != Rebooted || err != nil {
		t.Fatalf("outcome %v (%v), want Rebooted; console:\n%s", o, err, tail(con.String()))
	}
}

func TestTestGuestCrash(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "crash", nil)
	o, err := wait(t, m, testGuestTimeout)
	if o != Crashed || err == nil {
		t.Fatalf("outcome %v (%v), want Crashed with registers; console:\n%s", o, err, tail(con.String()))
	}
	t.Logf("crash report: %v", err)
}

func TestTestGuestHangStop(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "hang", nil)
	con.expect(t, "kvirt-testguest: hang", testGuestTimeout)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if o, err := wait(t, m, 10*time.Second); o != Stopped || err != nil {
		t.Fatalf("outcome %v (%v), want Stopped", o, err)
	}
}

func TestTestGuestPowerButton(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "button", nil)
	con.expect(t, "kvirt-testguest: button", testGuestTimeout)
	if err := m.RequestShutdown(); err != nil {
		t.Fatal(err)
	}
	if o, err := wait(t, m, testGuestTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}

// TestTestGuestPVH boots the test guest through its PVH entry (it declares one): it reads its command line
// from hvm_start_info and powers off through ACPI.
func TestTestGuestPVH(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "poweroff", func(c *Config) { c.PVH = true })
	con.expect(t, "kvirt-guest: ready", testGuestTimeout)
	if o, err := wait(t, m, testGuestTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}

// TestPVHNeedsEntryNote: asking for PVH with a kernel that declares no PVH entry fails at Start with a clear
// error.
func TestPVHNeedsEntryNote(t *testing.T) {
	testenv.RequireKVM(t)
	var img bytes.Buffer
	le := binary.LittleEndian
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: 1, Entry: 0x100000,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1}
	copy(h.Ident[:], "\x7fELF")
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	_ = binary.Write(&img, le, h)
	_ = binary.Write(&img, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Off: 0x1000, Paddr: 0x100000, Filesz: 2, Memsz: 2, Align: 0x1000})
	img.Write(make([]byte, 0x1000-img.Len()))
	img.Write([]byte{0xf4, 0xf4}) // hlt
	m, err := New(Config{KernelImage: img.Bytes(), MemoryBytes: 64 << 20, PVH: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	if err := m.Start(); err == nil || !strings.Contains(err.Error(), "no PVH entry") {
		t.Fatalf("Start = %v, want an error about the missing PVH entry", err)
	}
}

// TestCompatCmdline: the PVM policy appends its CPU words, the words keeping user space off AVX, and the
// lengthened systemd timeouts to the command line the guest gets; with no policy the command line is the
// caller's.
func TestCompatCmdline(t *testing.T) {
	for _, c := range []struct {
		compat Compat
		want   []string
		absent []string
	}{
		{CompatPVM, []string{"testguest=poweroff ", "noxsave", "clearcpuid=", "systemd.setenv=GLIBC_TUNABLES=", "systemd.default_timeout_start_sec=1800", "systemd.service_watchdogs=0"}, nil},
		{CompatOff, []string{"testguest=poweroff"}, []string{"noxsave", "GLIBC_TUNABLES", "systemd."}},
	} {
		m, _ := startTestGuest(t, "poweroff", func(cfg *Config) { cfg.Compat = c.compat })
		for _, w := range c.want {
			if !strings.Contains(m.Cmdline()+" ", w) {
				t.Errorf("compat %d: command line %q lacks %q", c.compat, m.Cmdline(), w)
			}
		}
		for _, w := range c.absent {
			if strings.Contains(m.Cmdline(), w) {
				t.Errorf("compat %d: command line %q has %q", c.compat, m.Cmdline(), w)
			}
		}
	}
}
