package bootdisk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/boot"
	"github.com/u-root/u-root/pkg/boot/grub"
	"github.com/u-root/u-root/pkg/boot/syslinux"
	"github.com/u-root/u-root/pkg/curl"
	"github.com/u-root/u-root/pkg/mount"
)

// maxConfigBytes bounds a boot configuration file read into memory.
const maxConfigBytes = 1 << 20

// Loader names the boot configuration format an entry came from.
type Loader string

const (
	GRUB     Loader = "grub"
	BLS      Loader = "bls"      // Boot Loader Specification type #1 entries (/loader/entries/*.conf)
	Syslinux Loader = "syslinux" // extlinux.conf, syslinux.cfg, isolinux.cfg
)

// Entry is the default boot entry of a filesystem's boot configuration. Paths are absolute inside the
// filesystem that holds the configuration.
type Entry struct {
	Loader  Loader
	Config  string // the configuration file read, e.g. /boot/grub/grub.cfg
	Title   string
	Kernel  string
	Initrds []string
	Cmdline string
}

// Where each loader's configuration lives, in the order they are tried (GRUB first: Debian, Ubuntu, and
// Fedora's grub.cfg that points at BLS entries with blscfg).
var (
	grubConfigs     = []string{"boot/grub/grub.cfg", "grub/grub.cfg", "boot/grub2/grub.cfg", "grub2/grub.cfg"}
	grubEnvFiles    = []string{"boot/grub/grubenv", "grub/grubenv", "boot/grub2/grubenv", "grub2/grubenv"}
	blsDirs         = []string{"loader/entries", "boot/loader/entries"}
	syslinuxConfigs = []string{"boot/extlinux/extlinux.conf", "extlinux/extlinux.conf", "boot/syslinux/extlinux.conf",
		"boot/syslinux/syslinux.cfg", "syslinux/syslinux.cfg", "extlinux.conf", "syslinux.cfg",
		"boot/isolinux/isolinux.cfg", "isolinux/isolinux.cfg"}
)

// errNoConfig says a filesystem holds no boot configuration.
var errNoConfig = errors.New("no boot configuration")

// FindEntry returns the default entry of the boot configuration in fsys (GRUB, then BLS, then
// extlinux/syslinux). A filesystem with none gives an error wrapping errNoConfig; a configuration that is
// there but names no kernel gives an error saying so.
func FindEntry(fsys fs.FS) (*Entry, error) {
	for _, c := range grubConfigs {
		data, err := readConfig(fsys, c)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return grubEntry(fsys, "/"+c, data)
	}
	if e, err := blsEntry(fsys, ""); !errors.Is(err, errNoConfig) {
		return e, err
	}
	for _, c := range syslinuxConfigs {
		if _, err := fs.Stat(fsys, c); err != nil {
			continue
		}
		return syslinuxEntry(fsys, "/"+c)
	}
	return nil, errNoConfig
}

func readConfig(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", name)
	}
	if st.Size() > maxConfigBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d a boot configuration may have", name, st.Size(), maxConfigBytes)
	}
	return io.ReadAll(io.LimitReader(f, maxConfigBytes))
}

// grubEntry parses grub.cfg with u-root's GRUB parser. GRUB's device syntax cannot be resolved without the
// disks mounted, so `search` leaves root at the filesystem holding grub.cfg: the kernel and initrd are
// looked up there, as they are on single-filesystem cloud images and on a separate /boot.
func grubEntry(fsys fs.FS, cfgPath string, data []byte) (*Entry, error) {
	s := newScheme(fsys)
	s.filter = dropGrubSearch
	root := &url.URL{Scheme: schemeName, Path: "/"}
	imgs, err := grub.ParseConfigFile(context.Background(), curl.Schemes{schemeName: s}, cfgPath, root, nil, &mount.Pool{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if bytes.Contains(data, []byte("blscfg")) {
		// Fedora and RHEL: grub.cfg loads BLS entries; the default is grubenv's saved_entry.
		env := grubEnv(fsys)
		if e, err := blsEntry(fsys, env["saved_entry"], env); !errors.Is(err, errNoConfig) {
			if e != nil {
				e.Config = cfgPath + " (blscfg) " + e.Config
			}
			return e, err
		}
	}
	var linux []*boot.LinuxImage
	for _, img := range imgs {
		if li, ok := img.(*boot.LinuxImage); ok {
			linux = append(linux, li)
		}
	}
	if savedDefault.Match(data) {
		// GRUB_DEFAULT=saved: grubenv's saved_entry names the entry by title ("submenu>entry" for one in a
		// submenu); u-root reads grubenv only from mounted disks, so it is matched here.
		if saved := grubEnv(fsys)["saved_entry"]; saved != "" {
			title := saved[strings.LastIndex(saved, ">")+1:]
			if i := slices.IndexFunc(linux, func(li *boot.LinuxImage) bool { return li.Name == title }); i > 0 {
				linux = append([]*boot.LinuxImage{linux[i]}, linux...)
			}
		}
	}
	if len(linux) == 0 {
		return nil, fmt.Errorf("%s: no Linux menu entry (a menuentry with a linux command)", cfgPath)
	}
	li := linux[0]
	e := &Entry{Loader: GRUB, Config: cfgPath, Title: li.Name, Cmdline: li.Cmdline, Kernel: urlPath(li.Kernel)}
	if p := urlPath(li.Initrd); p != "" {
		e.Initrds = []string{p}
	}
	if e.Kernel == "" {
		return nil, fmt.Errorf("%s: the default entry %q names no kernel", cfgPath, li.Name)
	}
	return e, nil
}

// savedDefault matches grub.cfg's `set default="${saved_entry}"` (GRUB_DEFAULT=saved).
var savedDefault = regexp.MustCompile(`(?m)^\s*set\s+default="?\$\{?saved_entry\}?"?\s*$`)

// grubEnv reads the first grubenv found (saved_entry, kernelopts).
func grubEnv(fsys fs.FS) map[string]string {
	for _, p := range grubEnvFiles {
		data, err := readConfig(fsys, p)
		if err != nil {
			continue
		}
		env, err := grub.ParseEnvFile(bytes.NewReader(data))
		if err != nil {
			continue
		}
		return env.Vars
	}
	return map[string]string{}
}

// blsEntry picks the default BLS entry. u-root's bls package reads entries from an OS path and opens the
// kernels they name, so the (few-line) format is parsed here over fs.FS instead. The default is the entry
// named by saved (GRUB's saved_entry), else the first matching loader.conf's "default" glob, else the entry
// with the highest version (systemd-boot's order).
func blsEntry(fsys fs.FS, saved string, vars ...map[string]string) (*Entry, error) {
	var dir string
	var names []string
	for _, d := range blsDirs {
		ents, err := fs.ReadDir(fsys, d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
				names = append(names, e.Name())
			}
		}
		if len(names) > 0 {
			dir = d
			break
		}
	}
	if len(names) == 0 {
		return nil, errNoConfig
	}
	ids := make([]string, len(names))
	for i, n := range names {
		ids[i] = strings.TrimSuffix(n, ".conf")
	}
	slices.SortFunc(ids, func(a, b string) int { return -compareVersions(a, b) })
	pick := ""
	if saved != "" && slices.Contains(ids, saved) {
		pick = saved
	}
	if pick == "" {
		if data, err := readConfig(fsys, "loader/loader.conf"); err == nil {
			if pattern := parseBLS(data)["default"]; len(pattern) > 0 {
				for _, id := range ids {
					if ok, _ := path.Match(pattern[0], id); ok {
						pick = id
						break
					}
				}
			}
		}
	}
	if pick == "" {
		pick = ids[0]
	}
	cfg := dir + "/" + pick + ".conf"
	data, err := readConfig(fsys, cfg)
	if err != nil {
		return nil, err
	}
	kv := parseBLS(data)
	e := &Entry{Loader: BLS, Config: "/" + cfg, Title: strings.Join(append(kv["title"], kv["version"]...), " ")}
	if len(kv["linux"]) == 0 {
		return nil, fmt.Errorf("/%s: the entry has no linux line (EFI and multiboot entries cannot be booted directly)", cfg)
	}
	// Absolute paths are relative to $BOOT (the filesystem holding the entries); relative ones to /loader.
	bootRoot := ""
	if dir == "boot/loader/entries" {
		bootRoot = "/boot"
	}
	abs := func(p string) string {
		if strings.HasPrefix(p, "/") {
			return path.Clean(bootRoot + p)
		}
		return path.Clean(bootRoot + "/loader/" + p)
	}
	e.Kernel = abs(kv["linux"][0])
	for _, v := range kv["initrd"] {
		for _, f := range strings.Fields(v) {
			if !strings.HasPrefix(f, "$") {
				e.Initrds = append(e.Initrds, abs(f))
			}
		}
	}
	var env map[string]string
	if len(vars) > 0 {
		env = vars[0]
	}
	var opts []string
	for _, o := range kv["options"] {
		for _, w := range strings.Fields(o) {
			if strings.HasPrefix(w, "$") {
				// GRUB variables Fedora's entries use ($kernelopts, $tuned_params) come from grubenv.
				if v := env[strings.TrimPrefix(w, "$")]; v != "" {
					opts = append(opts, v)
				}
				continue
			}
			opts = append(opts, w)
		}
	}
	e.Cmdline = strings.Join(opts, " ")
	return e, nil
}

// parseBLS parses "key value" lines; keys may repeat.
func parseBLS(data []byte) map[string][]string {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxConfigBytes)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			k, v = line[:i], line[i+1:]
		}
		out[k] = append(out[k], strings.TrimSpace(v))
	}
	return out
}

// compareVersions orders BLS ids as version strings (digit runs compared as numbers).
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := digitRun(a)
			nb, rb := digitRun(b)
			na, nb = strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func digitRun(s string) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// syslinuxEntry parses extlinux.conf/syslinux.cfg with u-root's syslinux parser.
func syslinuxEntry(fsys fs.FS, cfgPath string) (*Entry, error) {
	s := newScheme(fsys)
	root := &url.URL{Scheme: schemeName, Path: "/"}
	dir, name := path.Split(strings.TrimPrefix(cfgPath, "/"))
	imgs, err := syslinux.ParseConfigFile(context.Background(), curl.Schemes{schemeName: s}, name, root, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	for _, img := range imgs {
		li, ok := img.(*boot.LinuxImage)
		if !ok {
			continue
		}
		e := &Entry{Loader: Syslinux, Config: cfgPath, Title: li.Name, Kernel: urlPath(li.Kernel)}
		// u-root concatenates the initrds into one lazy reader named by their comma-joined URLs.
		if st, ok := li.Initrd.(fmt.Stringer); ok && li.Initrd != nil {
			for _, u := range strings.Split(st.String(), ",") {
				if pu, err := url.Parse(u); err == nil && pu.Scheme == schemeName {
					e.Initrds = append(e.Initrds, path.Clean("/"+pu.Path))
				}
			}
		}
		var words []string
		given := len(e.Initrds) > 0
		for _, w := range strings.Fields(li.Cmdline) {
			// "append initrd=..." is syslinux's other way to name the initrd (an INITRD directive wins).
			if v, ok := strings.CutPrefix(w, "initrd="); ok {
				for _, f := range strings.Split(v, ",") {
					if given || f == "" {
						continue
					}
					if !strings.HasPrefix(f, "/") {
						f = "/" + dir + f
					}
					e.Initrds = append(e.Initrds, path.Clean(f))
				}
				continue
			}
			words = append(words, w)
		}
		e.Cmdline = strings.Join(words, " ")
		if e.Kernel == "" {
			return nil, fmt.Errorf("%s: the default label %q names no kernel", cfgPath, li.Name)
		}
		return e, nil
	}
	return nil, fmt.Errorf("%s: no label with a kernel", cfgPath)
}

// urlPath returns the in-filesystem path of a file u-root's parsers reference through our scheme.
func urlPath(r io.ReaderAt) string {
	if r == nil {
		return ""
	}
	f, ok := r.(curl.File)
	if !ok || f.URL() == nil || f.URL().Scheme != schemeName {
		return ""
	}
	return cleanGrubPath(f.URL().Path)
}

// cleanGrubPath drops a GRUB device prefix ("(hd0,gpt1)/boot/x" → "/boot/x"): files are looked up in the
// filesystem that holds the configuration.
func cleanGrubPath(p string) string {
	p = path.Clean("/" + p)
	if rest, ok := strings.CutPrefix(p, "/("); ok {
		if i := strings.Index(rest, ")"); i >= 0 {
			p = path.Clean("/" + rest[i+1:])
		}
	}
	return p
}

// schemeName is the URL scheme through which u-root's parsers read files of the filesystem being inspected.
const schemeName = "bootdisk"

// maxConfigFetches bounds the configuration files one parse reads: u-root's parsers follow GRUB's
// configfile and syslinux's include recursively, with no loop detection of their own.
const maxConfigFetches = 16

// fsScheme is a curl.FileScheme over an fs.FS: u-root's parsers fetch configuration files through it
// (bounded reads, a bounded number of them) and reference kernels and initrds lazily (never read here).
// One parse uses it from one goroutine.
type fsScheme struct {
	fsys    fs.FS
	fetches int
	filter  func([]byte) []byte // applied to every configuration file read (nil: none)
}

func newScheme(fsys fs.FS) *fsScheme { return &fsScheme{fsys: fsys} }

func (s *fsScheme) read(u *url.URL) ([]byte, error) {
	if s.fetches++; s.fetches > maxConfigFetches {
		return nil, fmt.Errorf("more than %d configuration files included (configfile or include loop?)", maxConfigFetches)
	}
	name := strings.TrimPrefix(cleanGrubPath(u.Path), "/")
	if name == "" {
		name = "."
	}
	b, err := readConfig(s.fsys, name)
	if err == nil && s.filter != nil {
		b = s.filter(b)
	}
	return b, err
}

// dropGrubSearch removes GRUB's search commands from a grub.cfg before u-root parses it: GRUB devices are not
// resolved here (files are looked up on the filesystem holding grub.cfg), and u-root would log every
// unresolvable search as an "Error:" line in the launcher's log, misleading whoever reads it.
func dropGrubSearch(cfg []byte) []byte {
	lines := bytes.Split(cfg, []byte("\n"))
	out := lines[:0]
	for _, l := range lines {
		w := bytes.Fields(l)
		if len(w) > 0 && (string(w[0]) == "search" || bytes.HasPrefix(w[0], []byte("search."))) {
			continue
		}
		out = append(out, l)
	}
	return bytes.Join(out, []byte("\n"))
}

func (s *fsScheme) Fetch(_ context.Context, u *url.URL) (io.ReaderAt, error) {
	b, err := s.read(u)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

func (s *fsScheme) FetchWithoutCache(_ context.Context, u *url.URL) (io.Reader, error) {
	b, err := s.read(u)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}
