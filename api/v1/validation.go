package v1

import (
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Validation mirrors the checks of KubeVirt's admission webhooks
// (pkg/virt-api/webhooks/validating-webhook/admitters, pkg/storage/admitters,
// pkg/network/admitter) for the fields kvirt models, with KubeVirt's messages.
// kvirt has no webhook: the CRD's CEL rules cover what the apiserver must
// reject (run strategy, memory); these functions are for the controller
// (refuse to create a VMI, report FailedCreate) and the launcher (refuse to
// boot). Each error's Detail is KubeVirt's message; Field is the path.

const (
	cloudInitUserMaxLen    = 2048
	cloudInitNetworkMaxLen = 2048
	diskSerialMaxLen       = 256
)

var (
	diskSerialRE     = regexp.MustCompile(`^[A-Za-z0-9_.+-]+$`)
	interfaceNameRE  = regexp.MustCompile(`^[A-Za-z0-9-_]+$`)
	supportedBuses   = []DiskBus{DiskBusVirtio, DiskBusSCSI, DiskBusSATA, DiskBusUSB}
	supportedMachine = regexp.MustCompile(`^(q35|pc-q35.*)$`)
)

func invalid(p *field.Path, value any, msg string) *field.Error {
	return &field.Error{Type: field.ErrorTypeInvalid, Field: p.String(), BadValue: value, Detail: msg}
}

func required(p *field.Path, msg string) *field.Error {
	return &field.Error{Type: field.ErrorTypeRequired, Field: p.String(), BadValue: "", Detail: msg}
}

func duplicate(p *field.Path, value any, msg string) *field.Error {
	return &field.Error{Type: field.ErrorTypeDuplicate, Field: p.String(), BadValue: value, Detail: msg}
}

// ValidateRunStrategy checks spec.running / spec.runStrategy as KubeVirt's
// validateRunStrategy does.
func ValidateRunStrategy(specPath *field.Path, spec *VirtualMachineSpec) field.ErrorList {
	var errs field.ErrorList
	if spec.Running != nil && spec.RunStrategy != nil {
		errs = append(errs, invalid(specPath.Child("running"), *spec.Running,
			"Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead"))
	}
	if spec.Running == nil && spec.RunStrategy == nil {
		errs = append(errs, invalid(specPath.Child("running"), nil, "RunStrategy must be specified"))
	}
	if spec.RunStrategy != nil {
		rs := *spec.RunStrategy
		switch {
		case rs == RunStrategyWaitAsReceiver:
			errs = append(errs, invalid(specPath.Child("runStrategy"), string(rs),
				fmt.Sprintf("Invalid RunStrategy (%s), DecentralizedLiveMigration feature gate is not enabled in kubevirt resource", rs)))
		case !slices.Contains(ValidRunStrategies, rs):
			errs = append(errs, invalid(specPath.Child("runStrategy"), string(rs), fmt.Sprintf("Invalid RunStrategy (%s)", rs)))
		}
	}
	return errs
}

// RunningDeprecationWarning is KubeVirt's warning when spec.running is used.
const RunningDeprecationWarning = "spec.running is deprecated, please use spec.runStrategy instead."

// ValidateVirtualMachine validates a VM: run strategy, template presence and
// the template's VMI spec (without the memory requirement, which KubeVirt
// checks only on VMIs). Like KubeVirt's webhooks it judges the spec after
// defaulting (a copy is defaulted; vm is not modified).
func ValidateVirtualMachine(vm *VirtualMachine) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if vm.Spec.Template == nil {
		errs = append(errs, required(spec.Child("template"), "missing virtual machine template."))
	}
	errs = append(errs, ValidateRunStrategy(spec, &vm.Spec)...)
	if vm.Spec.Template != nil {
		s := vm.Spec.Template.Spec.DeepCopy()
		SetDefaults_VirtualMachineInstanceSpec(s, nil)
		errs = append(errs, ValidateVMISpec(spec.Child("template", "spec"), s)...)
	}
	return errs
}

// ValidateVirtualMachineInstance validates a VMI after defaulting (a copy is
// defaulted; vmi is not modified): its spec plus the mandatory memory check.
func ValidateVirtualMachineInstance(vmi *VirtualMachineInstance) field.ErrorList {
	spec := field.NewPath("spec")
	s := vmi.Spec.DeepCopy()
	SetDefaults_VirtualMachineInstanceSpec(s, nil)
	errs := ValidateVMIMandatoryFields(spec, s)
	return append(errs, ValidateVMISpec(spec, s)...)
}

// ValidateVMIMandatoryFields is KubeVirt's
// ValidateVirtualMachineInstanceMandatoryFields: some memory must be requested.
func ValidateVMIMandatoryFields(p *field.Path, spec *VirtualMachineInstanceSpec) field.ErrorList {
	if r, ok := spec.Domain.Resources.Requests["memory"]; ok && r.Value() != 0 {
		return nil
	}
	if l, ok := spec.Domain.Resources.Limits["memory"]; ok && l.Value() != 0 {
		// KubeVirt's mutator copies the limit into the request before validating.
		return nil
	}
	m := spec.Domain.Memory
	if m != nil && (m.Guest != nil || m.Hugepages != nil) {
		return nil
	}
	return field.ErrorList{required(p, fmt.Sprintf("no memory requested, at least one of '%s', '%s' or '%s' must be set",
		p.Child("domain", "memory", "guest"), p.Child("domain", "memory", "hugepages", "pageSize"),
		p.Child("domain", "resources", "requests", "memory")))}
}

// ValidateVMISpec validates a VMI spec (or a VM template's spec) at path p.
func ValidateVMISpec(p *field.Path, spec *VirtualMachineInstanceSpec) field.ErrorList {
	var errs field.ErrorList
	if spec.Hostname != "" {
		if msgs := k8svalidation.IsDNS1123Label(spec.Hostname); len(msgs) > 0 {
			errs = append(errs, invalid(p.Child("hostname"), spec.Hostname,
				fmt.Sprintf("%s does not conform to the kubernetes DNS_LABEL rules : %s", p.Child("hostname"), strings.Join(msgs, ", "))))
		}
	}
	if spec.Subdomain != "" {
		if msgs := k8svalidation.IsDNS1123Subdomain(spec.Subdomain); len(msgs) > 0 {
			errs = append(errs, invalid(p.Child("subdomain"), spec.Subdomain,
				fmt.Sprintf("%s does not conform to the kubernetes DNS_SUBDOMAIN rules : %s", p.Child("subdomain"), strings.Join(msgs, ", "))))
		}
	}
	if spec.TerminationGracePeriodSeconds != nil && *spec.TerminationGracePeriodSeconds < 0 {
		fp := p.Child("terminationGracePeriodSeconds")
		errs = append(errs, invalid(fp, *spec.TerminationGracePeriodSeconds,
			fmt.Sprintf("%s '%d': must be greater than or equal to 0.", fp, *spec.TerminationGracePeriodSeconds)))
	}
	if spec.StartStrategy != nil && *spec.StartStrategy != StartStrategyPaused {
		fp := p.Child("startStrategy")
		errs = append(errs, invalid(fp, string(*spec.StartStrategy),
			fmt.Sprintf("%s is set with an unrecognized option: %s", fp, *spec.StartStrategy)))
	}
	errs = append(errs, validateMemory(p, &spec.Domain)...)
	errs = append(errs, validateCPU(p, &spec.Domain)...)
	if m := spec.Domain.Machine; m != nil && m.Type != "" && !supportedMachine.MatchString(m.Type) {
		fp := p.Child("domain", "machine", "type")
		errs = append(errs, &field.Error{Type: field.ErrorTypeNotSupported, Field: fp.String(), BadValue: m.Type,
			Detail: fmt.Sprintf("%s is not supported: %s (allowed values: %v)", fp, m.Type, []string{"q35*"})})
	}
	errs = append(errs, validateDisks(p, spec)...)
	errs = append(errs, validateVolumes(p.Child("volumes"), spec.Volumes)...)
	errs = append(errs, validateNetworks(p, spec)...)
	return errs
}

func validateMemory(p *field.Path, d *DomainSpec) field.ErrorList {
	var errs field.ErrorList
	reqPath := p.Child("domain", "resources", "requests", "memory")
	limPath := p.Child("domain", "resources", "limits", "memory")
	req, hasReq := d.Resources.Requests["memory"]
	lim, hasLim := d.Resources.Limits["memory"]
	if hasReq {
		if req.Sign() < 0 {
			errs = append(errs, invalid(reqPath, req.String(), fmt.Sprintf("%s '%s': must be greater than or equal to 0.", reqPath, req.String())))
		} else if req.Cmp(resource.MustParse("1M")) < 0 {
			errs = append(errs, invalid(reqPath, req.String(), fmt.Sprintf("%s '%s': must be greater than or equal to 1M.", reqPath, req.String())))
		}
	}
	if hasLim && lim.Sign() < 0 {
		errs = append(errs, invalid(limPath, lim.String(), fmt.Sprintf("%s '%s': must be greater than or equal to 0.", limPath, lim.String())))
	}
	if hasReq && hasLim && lim.Sign() > 0 && req.Cmp(lim) > 0 {
		errs = append(errs, invalid(reqPath, req.String(), fmt.Sprintf("%s '%s' is greater than %s '%s'", reqPath, req.String(), limPath, lim.String())))
	}
	if d.Memory != nil && d.Memory.Guest != nil {
		gp := p.Child("domain", "memory", "guest")
		g := d.Memory.Guest
		if g.Sign() <= 0 {
			errs = append(errs, invalid(gp, g.String(), fmt.Sprintf("%s '%s': must be greater than or equal to 1M.", gp, g.String())))
		}
		if hasLim && lim.Sign() > 0 && g.Cmp(lim) > 0 {
			errs = append(errs, invalid(gp, g.String(), fmt.Sprintf("%s '%s' must be equal to or less than the memory limit %s '%s'", gp, g.String(), limPath, lim.String())))
		}
	}
	return errs
}

func validateCPU(p *field.Path, d *DomainSpec) field.ErrorList {
	var errs field.ErrorList
	if d.CPU == nil {
		return nil
	}
	for i, f := range d.CPU.Features {
		if !slices.Contains(ValidCPUFeaturePolicies, f.Policy) {
			errs = append(errs, &field.Error{Type: field.ErrorTypeNotSupported, Field: p.Child("domain", "cpu", "features").Index(i).Child("policy").String(),
				BadValue: f.Policy, Detail: fmt.Sprintf("CPU feature %s uses policy %s that is not supported.", f.Name, f.Policy)})
		}
	}
	return errs
}

func diskKind(d Disk) (string, DiskBus) {
	switch {
	case d.Disk != nil:
		return "disk", d.Disk.Bus
	case d.CDRom != nil:
		return "cdrom", d.CDRom.Bus
	}
	return "", ""
}

func validateDisks(p *field.Path, spec *VirtualMachineInstanceSpec) field.ErrorList {
	var errs field.ErrorList
	disksPath := p.Child("domain", "devices", "disks")
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	bootOrders := map[uint]bool{}
	for idx, disk := range spec.Domain.Devices.Disks {
		dp := disksPath.Index(idx)
		for other := 0; other < idx; other++ {
			if spec.Domain.Devices.Disks[other].Name == disk.Name {
				errs = append(errs, invalid(dp.Child("name"), disk.Name, fmt.Sprintf("%s and %s must not have the same Name.", dp, disksPath.Index(other))))
			}
		}
		if disk.Disk != nil && disk.CDRom != nil {
			errs = append(errs, invalid(dp, disk.Name, fmt.Sprintf("%s can only have a single target type defined", dp)))
		}
		if !volumes[disk.Name] {
			errs = append(errs, invalid(dp.Child("name"), disk.Name, fmt.Sprintf("%s '%s' not found.", dp.Child("Name"), disk.Name)))
		}
		if disk.BootOrder != nil {
			if *disk.BootOrder < 1 {
				errs = append(errs, invalid(dp.Child("bootOrder"), *disk.BootOrder, fmt.Sprintf("%s must have a boot order > 0, if supplied", dp)))
			} else {
				if bootOrders[*disk.BootOrder] {
					errs = append(errs, invalid(dp.Child("bootOrder"), *disk.BootOrder, fmt.Sprintf("Boot order for %s already set for a different device.", dp.Child("bootOrder"))))
				}
				bootOrders[*disk.BootOrder] = true
			}
		}
		kind, bus := diskKind(disk)
		switch bus {
		case "":
		case "ide":
			errs = append(errs, invalid(dp.Child(kind, "bus"), string(bus), "IDE bus is not supported"))
		case DiskBusVirtio:
			if kind == "cdrom" {
				errs = append(errs, invalid(dp.Child("cdrom", "bus"), string(bus), fmt.Sprintf("Bus type %s is invalid for CD-ROM device", bus)))
			}
		case DiskBusSATA:
			if disk.Disk != nil && disk.Disk.ReadOnly {
				errs = append(errs, invalid(dp.Child("disk", "bus"), string(bus), fmt.Sprintf("%s hard-disks do not support read-only.", bus)))
			}
		case DiskBusSCSI, DiskBusUSB:
		default:
			errs = append(errs, invalid(dp.Child(kind, "bus"), string(bus), fmt.Sprintf("%s is set with an unrecognized bus %s, must be one of: %v", dp, bus, supportedBuses)))
		}
		if disk.Cache != "" && disk.Cache != CacheNone && disk.Cache != CacheWriteThrough && disk.Cache != CacheWriteBack {
			errs = append(errs, invalid(dp.Child("cache"), string(disk.Cache), fmt.Sprintf("%s has invalid value %s", dp.Child("cache"), disk.Cache)))
		}
		if disk.IO != "" && disk.IO != IONative && disk.IO != IOThreads {
			errs = append(errs, &field.Error{Type: field.ErrorTypeNotSupported, Field: dp.Child("io").String(), BadValue: string(disk.IO),
				Detail: fmt.Sprintf("Disk IO mode for %s is not supported. Supported modes are: native, threads.", p)})
		}
		if disk.Serial != "" {
			if !diskSerialRE.MatchString(disk.Serial) {
				errs = append(errs, invalid(dp.Child("serial"), disk.Serial, fmt.Sprintf("%s must be made up of the following characters [A-Za-z0-9_.+-], if specified", dp)))
			}
			if len([]rune(disk.Serial)) > diskSerialMaxLen {
				errs = append(errs, invalid(dp.Child("serial"), disk.Serial, fmt.Sprintf("%s must be less than or equal to %d in length, if specified", dp, diskSerialMaxLen)))
			}
		}
	}
	disks := map[string]bool{}
	for _, d := range spec.Domain.Devices.Disks {
		disks[d.Name] = true
	}
	for idx, v := range spec.Volumes {
		if !disks[v.Name] {
			fp := p.Child("domain", "volumes").Index(idx).Child("name")
			errs = append(errs, invalid(fp, v.Name, fmt.Sprintf("%s '%s' not found.", fp, v.Name)))
		}
	}
	for idx, iface := range spec.Domain.Devices.Interfaces {
		if iface.BootOrder == nil {
			continue
		}
		ip := p.Child("domain", "devices", "interfaces").Index(idx)
		if *iface.BootOrder < 1 {
			errs = append(errs, invalid(ip.Child("bootOrder"), *iface.BootOrder, fmt.Sprintf("%s must have a boot order > 0, if supplied", ip)))
			continue
		}
		if bootOrders[*iface.BootOrder] {
			errs = append(errs, invalid(ip.Child("bootOrder"), *iface.BootOrder, fmt.Sprintf("Boot order for %s already set for a different device.", ip.Child("bootOrder"))))
		}
		bootOrders[*iface.BootOrder] = true
	}
	return errs
}

func validateVolumes(p *field.Path, volumes []Volume) field.ErrorList {
	var errs field.ErrorList
	names := map[string]int{}
	for idx, v := range volumes {
		vp := p.Index(idx)
		if other, ok := names[v.Name]; ok {
			errs = append(errs, invalid(vp.Child("name"), v.Name, fmt.Sprintf("%s and %s must not have the same Name.", vp, p.Index(other))))
		} else {
			names[v.Name] = idx
		}
		n := 0
		for _, set := range []bool{v.ContainerDisk != nil, v.CloudInitNoCloud != nil, v.EmptyDisk != nil, v.PersistentVolumeClaim != nil, v.HostDisk != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, invalid(vp, v.Name, fmt.Sprintf("%s must have exactly one source type set", vp)))
		}
		if c := v.ContainerDisk; c != nil && c.Image == "" {
			errs = append(errs, required(vp.Child("containerDisk", "image"), fmt.Sprintf("%s is a required field", vp.Child("containerDisk", "image"))))
		}
		if c := v.PersistentVolumeClaim; c != nil && c.ClaimName == "" {
			errs = append(errs, required(vp.Child("persistentVolumeClaim", "claimName"), fmt.Sprintf("%s is a required field", vp.Child("persistentVolumeClaim", "claimName"))))
		}
		if e := v.EmptyDisk; e != nil && e.Capacity.Sign() <= 0 {
			errs = append(errs, invalid(vp.Child("emptyDisk", "capacity"), e.Capacity.String(), fmt.Sprintf("%s must be greater than 0", vp.Child("emptyDisk", "capacity"))))
		}
		if h := v.HostDisk; h != nil {
			if h.Path == "" {
				errs = append(errs, required(vp.Child("hostDisk", "path"), fmt.Sprintf("%s is required for hostDisk volume", vp.Child("hostDisk", "path"))))
			}
			if h.Type != HostDiskExists && h.Type != HostDiskExistsOrCreate {
				errs = append(errs, invalid(vp.Child("hostDisk", "type"), string(h.Type), fmt.Sprintf("%s has invalid value '%s', allowed are '%s' or '%s'",
					vp.Child("hostDisk", "type"), h.Type, HostDiskExists, HostDiskExistsOrCreate)))
			}
			if h.Type == HostDiskExists && !h.Capacity.IsZero() {
				errs = append(errs, invalid(vp.Child("hostDisk", "capacity"), h.Capacity.String(), fmt.Sprintf("%s is allowed to pass only with %s equal to '%s'",
					vp.Child("hostDisk", "capacity"), vp.Child("hostDisk", "type"), HostDiskExistsOrCreate)))
			}
		}
		if c := v.CloudInitNoCloud; c != nil {
			errs = append(errs, validateNoCloud(vp, c)...)
		}
	}
	return errs
}

func validateNoCloud(vp *field.Path, c *CloudInitNoCloudSource) field.ErrorList {
	var errs field.ErrorList
	const kind = "cloudInitNoCloud"
	cp := vp.Child(kind)
	count := func(ref bool, b64 string, plain string, b64Field string) (n, size int) {
		if ref {
			n++
		}
		if b64 != "" {
			n++
			data, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				fp := cp.Child(b64Field)
				errs = append(errs, invalid(fp, "", fmt.Sprintf("%s.%s.%s is not a valid base64 value.", fp, kind, b64Field)))
			}
			size = len(data)
		}
		if plain != "" {
			n++
			size = len(plain)
		}
		return n, size
	}
	n, size := count(c.UserDataSecretRef != nil && c.UserDataSecretRef.Name != "", c.UserDataBase64, c.UserData, "userDataBase64")
	if n > 1 {
		errs = append(errs, invalid(cp, "", fmt.Sprintf("%s must have only one userdatasource set.", cp)))
	}
	if size > cloudInitUserMaxLen {
		errs = append(errs, invalid(cp, size, fmt.Sprintf("%s userdata exceeds %d byte limit. Should use UserDataSecretRef for larger data.", cp, cloudInitUserMaxLen)))
	}
	n, size = count(c.NetworkDataSecretRef != nil && c.NetworkDataSecretRef.Name != "", c.NetworkDataBase64, c.NetworkData, "networkDataBase64")
	if n > 1 {
		errs = append(errs, invalid(cp, "", fmt.Sprintf("%s must have only one networkdata source set.", cp)))
	}
	if size > cloudInitNetworkMaxLen {
		errs = append(errs, invalid(cp, size, fmt.Sprintf("%s networkdata exceeds %d byte limit. Should use NetworkDataSecretRef for larger data.", cp, cloudInitNetworkMaxLen)))
	}
	return errs
}

// masqueradeReservedMAC is the in-pod bridge's MAC under masquerade binding.
const masqueradeReservedMAC = "02:00:00:00:00:00"

func validateNetworks(p *field.Path, spec *VirtualMachineInstanceSpec) field.ErrorList {
	var errs field.ErrorList
	ifacesPath := p.Child("domain", "devices", "interfaces")
	networks := map[string]Network{}
	pods := 0
	for i, n := range spec.Networks {
		np := p.Child("networks").Index(i)
		if _, dup := networks[n.Name]; dup {
			errs = append(errs, duplicate(np.Child("name"), n.Name, fmt.Sprintf("Network with name %q already exists, every network must have a unique name", n.Name)))
		}
		networks[n.Name] = n
		if n.Pod == nil {
			errs = append(errs, required(np, "should have a network type"))
		} else {
			pods++
		}
	}
	if pods > 1 {
		errs = append(errs, duplicate(p.Child("interfaces"), pods, fmt.Sprintf("more than one interface is connected to a pod network in %s", p.Child("interfaces"))))
	}
	ifaces := map[string]bool{}
	for idx, iface := range spec.Domain.Devices.Interfaces {
		ip := ifacesPath.Index(idx)
		if ifaces[iface.Name] {
			errs = append(errs, duplicate(ip.Child("name"), iface.Name, "Only one interface can be connected to one specific network"))
		}
		ifaces[iface.Name] = true
		nw, hasNet := networks[iface.Name]
		if !hasNet {
			errs = append(errs, invalid(ip.Child("name"), iface.Name, fmt.Sprintf("%s '%s' not found.", ip.Child("name"), iface.Name)))
		}
		if !interfaceNameRE.MatchString(iface.Name) {
			errs = append(errs, invalid(ip.Child("name"), iface.Name, "Network interface name can only contain alphabetical characters, numbers, dashes (-) or underscores (_)"))
		}
		if iface.Model != "" && iface.Model != "virtio" {
			errs = append(errs, &field.Error{Type: field.ErrorTypeNotSupported, Field: ip.Child("model").String(), BadValue: iface.Model,
				Detail: fmt.Sprintf("interface %s uses model %s that is not supported.", ip.Child("name"), iface.Model)})
		}
		if iface.MacAddress != "" {
			mac, err := net.ParseMAC(iface.MacAddress)
			switch {
			case err != nil:
				errs = append(errs, invalid(ip.Child("macAddress"), iface.MacAddress, fmt.Sprintf("interface %s has malformed MAC address (%s).", ip.Child("name"), iface.MacAddress)))
			case len(mac) > 6:
				errs = append(errs, invalid(ip.Child("macAddress"), iface.MacAddress, fmt.Sprintf("interface %s has too long MAC address (%s).", ip.Child("name"), iface.MacAddress)))
			}
		}
		bindings := 0
		if iface.Bridge != nil {
			bindings++
		}
		if iface.Masquerade != nil {
			bindings++
		}
		if bindings != 1 {
			errs = append(errs, invalid(ip, iface.Name, fmt.Sprintf("logical %s interface must have exactly one binding method or binding plugin", iface.Name)))
		}
		if iface.Masquerade != nil {
			if hasNet && nw.Pod == nil {
				errs = append(errs, invalid(ip.Child("name"), iface.Name, "Masquerade interface only implemented with pod network"))
			}
			if strings.EqualFold(iface.MacAddress, masqueradeReservedMAC) {
				errs = append(errs, invalid(ip.Child("macAddress"), iface.MacAddress, "The requested MAC address is reserved for the in-pod bridge. Please choose another one."))
			}
		}
		if hasNet && nw.Pod != nil {
			errs = append(errs, validatePorts(ip, iface.Ports)...)
		}
	}
	for i, n := range spec.Networks {
		if !ifaces[n.Name] {
			fp := p.Child("networks").Index(i).Child("name")
			errs = append(errs, required(fp, fmt.Sprintf("%s '%s' not found.", fp, n.Name)))
		}
	}
	return errs
}

func validatePorts(ip *field.Path, ports []Port) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	for i, port := range ports {
		pp := ip.Child("ports").Index(i)
		if port.Name != "" {
			if names[port.Name] {
				errs = append(errs, duplicate(pp.Child("name"), port.Name, fmt.Sprintf("Duplicate name of the port: %s", port.Name)))
			}
			if len(k8svalidation.IsValidPortName(port.Name)) != 0 {
				errs = append(errs, invalid(pp.Child("name"), port.Name, fmt.Sprintf("Invalid name of the port: %s", port.Name)))
			}
			names[port.Name] = true
		}
		if port.Port == 0 {
			errs = append(errs, required(pp.Child("port"), "Port field is mandatory."))
		}
		if port.Port < 0 || port.Port >= 65536 {
			errs = append(errs, invalid(pp.Child("port"), port.Port, "Port field must be in range 0 < x < 65536."))
		}
		if port.Protocol != "" && port.Protocol != "TCP" && port.Protocol != "UDP" {
			errs = append(errs, invalid(pp.Child("protocol"), port.Protocol, "Unknown protocol, only TCP or UDP allowed"))
		}
	}
	return errs
}
