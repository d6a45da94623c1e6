package v1

import (
	"regexp"
	"slices"
	"strings"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits shared by the CRD markers in types.go and ValidateSpec. The markers
// cannot refer to these constants, so a change here must be made there too;
// the admission test runs one table through both and fails when they drift.
const (
	maxGPUTypeLength  = 32
	minGPUCount       = 1
	maxGPUCount       = 16
	maxRegionLength   = 64
	maxRegions        = 16
	maxDurationLength = 64
	maxNodeLabels     = 64
	maxNodeTaints     = 32
)

// Messages that the CRD rules use too, so a user sees the same words from
// admission and from the controller's condition.
const (
	durationMessage         = "must be a positive Go duration such as 90m or 36h (no d or w units)"
	reservedLabelKeyMessage = "keys under kubernetes.io/, k8s.io/, tgp.solanyn.com/ and their subdomains are reserved"
	regionMessage           = "must be lower-case letters and digits in dash-separated words, such as us-west or eu-central-1"
)

// reservedLabelDomains are the label key prefixes a GPURequest may not set,
// with every subdomain of them: Kubernetes' own (the NodeRestriction
// admission plugin refuses most of them from a kubelet, and the rest belong
// to the cluster, not a tenant) and the operator's, which it sets itself.
var reservedLabelDomains = []string{"kubernetes.io", "k8s.io", GroupName}

var (
	regionPolicies = []string{string(RegionPolicyOrdered), string(RegionPolicyLowestPrice)}
	providerNames  = []string{"lambdalabs", "runpod", "paperspace", "vastai"}
	taintEffects   = []string{string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}
)

// IsReservedLabelKey reports whether key's prefix (the part before the first
// "/") is kubernetes.io, k8s.io or tgp.solanyn.com, or a subdomain of one of
// them (node-role.kubernetes.io, node-restriction.kubernetes.io, foo.k8s.io).
// A key without a prefix is never reserved. Like the CRD rule, it compares
// the prefix as written: a prefix with upper-case letters is not a DNS
// subdomain and so not a valid key in the first place.
func IsReservedLabelKey(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	for _, d := range reservedLabelDomains {
		if prefix == d || strings.HasSuffix(prefix, "."+d) {
			return true
		}
	}
	return false
}

// ValidateSpec checks one GPURequestSpec against the same rules the CRD
// schema enforces at admission, except those that compare an update with the
// stored object (immutability) and those only a real API server applies
// (unknown fields, JSON types). path is where spec sits, usually
// field.NewPath("spec").
//
// The controller runs it on every sync, so an object stored before a rule
// existed (or written around admission) is reported on that object instead
// of being acted on. Fields whose Go zero value means "unset" (gpuCount 0,
// region "", regionPolicy "", provider "") are treated as unset, as the API
// server's defaulting and omitempty make them; only a pointer or a nil slice
// tells an explicit empty value apart, and those are checked.
func ValidateSpec(spec *GPURequestSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList

	switch p := path.Child("gpuType"); {
	case spec.GPUType == "":
		errs = append(errs, field.Required(p, "the GPU model, such as A100 or RTX4090"))
	case len(spec.GPUType) > maxGPUTypeLength:
		errs = append(errs, field.TooLong(p, spec.GPUType, maxGPUTypeLength))
	}
	if c := spec.GPUCount; c != 0 && (c < minGPUCount || c > maxGPUCount) {
		errs = append(errs, field.Invalid(path.Child("gpuCount"), c, "must be between 1 and 16"))
	}

	if spec.Region != "" {
		errs = append(errs, validateRegion(path.Child("region"), spec.Region)...)
	}
	errs = append(errs, validateRegionPreference(path.Child("regionPreference"), spec.RegionPreference)...)
	if spec.Region != "" && spec.RegionPreference != nil {
		errs = append(errs, field.Invalid(path.Child("regionPreference"), spec.RegionPreference, "set at most one of region and regionPreference"))
	}
	if pol := string(spec.RegionPolicy); pol != "" && !slices.Contains(regionPolicies, pol) {
		errs = append(errs, field.NotSupported(path.Child("regionPolicy"), pol, regionPolicies))
	}

	errs = append(errs, validatePrices(spec, path)...)

	if spec.Provider != "" && !slices.Contains(providerNames, spec.Provider) {
		errs = append(errs, field.NotSupported(path.Child("provider"), spec.Provider, providerNames))
	}

	errs = append(errs, validateDuration(path.Child("maxLifetime"), spec.MaxLifetime)...)
	errs = append(errs, validateDuration(path.Child("idleTimeout"), spec.IdleTimeout)...)

	if b := spec.Bootstrap; b != nil && b.SecretName == "" {
		errs = append(errs, field.Required(path.Child("bootstrap", "secretName"), "the Secret holding the user-data template"))
	}
	if b := spec.Bootstrap; b != nil && len(b.ScriptKey) > maxRefLength {
		errs = append(errs, field.TooLong(path.Child("bootstrap", "scriptKey"), b.ScriptKey, maxRefLength))
	}
	if b := spec.Bootstrap; b != nil && b.ValuesFrom != nil {
		switch p, name := path.Child("bootstrap", "valuesFrom", "secretName"), b.ValuesFrom.SecretName; {
		case name == "":
			errs = append(errs, field.Required(p, "the Secret holding the template's values"))
		case len(name) > maxRefLength:
			errs = append(errs, field.TooLong(p, name, maxRefLength))
		}
	}

	errs = append(errs, validateNodeLabels(path.Child("nodeLabels"), spec.NodeLabels)...)
	errs = append(errs, validateNodeTaints(path.Child("nodeTaints"), spec.NodeTaints)...)

	if c := spec.Container; c != nil {
		if spec.IdleTimeout != nil {
			errs = append(errs, field.Invalid(path.Child("idleTimeout"), string(*spec.IdleTimeout), "idleTimeout needs a Node; a container request cannot set it"))
		}
		if spec.Bootstrap != nil || spec.NodeLabels != nil || spec.NodeTaints != nil {
			errs = append(errs, field.Invalid(path.Child("container"), c.Image, "bootstrap, nodeLabels and nodeTaints need a Node; a container request cannot set them"))
		}
		errs = append(errs, validateContainer(path.Child("container"), c)...)
	}
	return errs
}

// Container limits, as in the CRD markers.
const (
	maxImageLength   = 512
	maxArgs          = 64
	maxArgLength     = 1024
	maxEnv           = 64
	maxEnvNameLength = 128
	maxEnvValue      = 4096
	maxRefLength     = 253
	maxPorts         = 16
)

var (
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	portProtocols  = []string{"http", "tcp"}
)

func validateContainer(p *field.Path, c *ContainerSpec) field.ErrorList {
	var errs field.ErrorList
	switch ip := p.Child("image"); {
	case c.Image == "":
		errs = append(errs, field.Required(ip, "a container image reference"))
	case len(c.Image) > maxImageLength:
		errs = append(errs, field.TooLong(ip, c.Image, maxImageLength))
	case strings.ContainsFunc(c.Image, unicode.IsSpace):
		errs = append(errs, field.Invalid(ip, c.Image, "must not contain white space"))
	}
	if len(c.Args) > maxArgs {
		errs = append(errs, field.TooMany(p.Child("args"), len(c.Args), maxArgs))
	}
	for i, a := range c.Args {
		if len(a) > maxArgLength {
			errs = append(errs, field.TooLong(p.Child("args").Index(i), a, maxArgLength))
		}
	}
	if len(c.Env) > maxEnv {
		errs = append(errs, field.TooMany(p.Child("env"), len(c.Env), maxEnv))
	}
	for i, e := range c.Env {
		ep := p.Child("env").Index(i)
		switch {
		case e.Name == "":
			errs = append(errs, field.Required(ep.Child("name"), "a variable name"))
		case len(e.Name) > maxEnvNameLength:
			errs = append(errs, field.TooLong(ep.Child("name"), e.Name, maxEnvNameLength))
		case !envNamePattern.MatchString(e.Name):
			errs = append(errs, field.Invalid(ep.Child("name"), e.Name, "letters, digits and _, not starting with a digit"))
		}
		if slices.ContainsFunc(c.Env[:i], func(o ContainerEnvVar) bool { return o.Name == e.Name }) {
			errs = append(errs, field.Duplicate(ep, e.Name))
		}
		if (e.Value != nil) == (e.ValueFrom != nil) {
			errs = append(errs, field.Invalid(ep, e.Name, "set exactly one of value and valueFrom"))
		}
		if e.Value != nil && len(*e.Value) > maxEnvValue {
			errs = append(errs, field.TooLong(ep.Child("value"), "", maxEnvValue))
		}
		if r := e.ValueFrom; r != nil {
			for _, f := range []struct{ name, v string }{{"secretName", r.SecretName}, {"key", r.Key}} {
				if f.v == "" {
					errs = append(errs, field.Required(ep.Child("valueFrom", f.name), ""))
				} else if len(f.v) > maxRefLength {
					errs = append(errs, field.TooLong(ep.Child("valueFrom", f.name), f.v, maxRefLength))
				}
			}
		}
	}
	if len(c.Ports) > maxPorts {
		errs = append(errs, field.TooMany(p.Child("ports"), len(c.Ports), maxPorts))
	}
	for i, port := range c.Ports {
		pp := p.Child("ports").Index(i)
		if port.Port < 1 || port.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, "must be between 1 and 65535"))
		}
		if port.Protocol != "" && !slices.Contains(portProtocols, port.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, portProtocols))
		}
		if slices.ContainsFunc(c.Ports[:i], func(o ContainerPort) bool { return o.Port == port.Port }) {
			errs = append(errs, field.Duplicate(pp, port.Port))
		}
	}
	return errs
}

func validateRegion(p *field.Path, region string) field.ErrorList {
	if region == "" {
		return field.ErrorList{field.Required(p, regionMessage)}
	}
	if len(region) > maxRegionLength {
		return field.ErrorList{field.TooLong(p, region, maxRegionLength)}
	}
	for word := range strings.SplitSeq(region, "-") {
		if word == "" || strings.IndexFunc(word, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9') }) >= 0 {
			return field.ErrorList{field.Invalid(p, region, regionMessage)}
		}
	}
	return nil
}

func validateRegionPreference(p *field.Path, regions []string) field.ErrorList {
	if regions == nil {
		return nil
	}
	var errs field.ErrorList
	switch {
	case len(regions) == 0:
		errs = append(errs, field.Invalid(p, regions, "must list at least one region when set"))
	case len(regions) > maxRegions:
		errs = append(errs, field.TooMany(p, len(regions), maxRegions))
	}
	for i, r := range regions {
		errs = append(errs, validateRegion(p.Index(i), r)...)
		if slices.Contains(regions[:i], r) {
			errs = append(errs, field.Duplicate(p.Index(i), r))
		}
	}
	return errs
}

func validatePrices(spec *GPURequestSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	// !(v > 0) refuses NaN too, which JSON cannot carry but Go can.
	if v := spec.MaxSpotPrice; v != nil && !(*v > 0) {
		errs = append(errs, field.Invalid(path.Child("maxSpotPrice"), *v, "must be greater than 0 (USD per hour for the whole machine)"))
	}
	if v := spec.MaxPrice; v != nil && !(*v > 0) {
		errs = append(errs, field.Invalid(path.Child("maxPrice"), *v, "must be greater than 0 (USD per hour for the whole machine)"))
	}
	if spec.MaxSpotPrice != nil && !spec.SpotInstance {
		errs = append(errs, field.Invalid(path.Child("maxSpotPrice"), *spec.MaxSpotPrice, "maxSpotPrice requires spotInstance: true"))
	}
	if spec.MaxSpotPrice != nil && spec.MaxPrice != nil && *spec.MaxSpotPrice > *spec.MaxPrice {
		errs = append(errs, field.Invalid(path.Child("maxSpotPrice"), *spec.MaxSpotPrice, "maxSpotPrice must not be greater than maxPrice"))
	}
	return errs
}

func validateDuration(p *field.Path, d *Duration) field.ErrorList {
	if d == nil {
		return nil
	}
	if len(*d) > maxDurationLength {
		return field.ErrorList{field.TooLong(p, string(*d), maxDurationLength)}
	}
	if _, err := d.Parse(); err != nil {
		return field.ErrorList{field.Invalid(p, string(*d), durationMessage)}
	}
	return nil
}

func validateNodeLabels(p *field.Path, labels map[string]string) field.ErrorList {
	var errs field.ErrorList
	if len(labels) > maxNodeLabels {
		errs = append(errs, field.TooMany(p, len(labels), maxNodeLabels))
	}
	// Sorted, so the same object always yields the same list (it ends up in
	// a condition message, and an unchanged message is not rewritten).
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kp := p.Key(k)
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, field.Invalid(kp, k, "key "+strings.Join(msgs, "; ")))
		} else if IsReservedLabelKey(k) {
			errs = append(errs, field.Invalid(kp, k, reservedLabelKeyMessage))
		}
		if msgs := validation.IsValidLabelValue(labels[k]); len(msgs) > 0 {
			errs = append(errs, field.Invalid(kp, labels[k], "value "+strings.Join(msgs, "; ")))
		}
	}
	return errs
}

func validateNodeTaints(p *field.Path, taints []NodeTaint) field.ErrorList {
	var errs field.ErrorList
	if len(taints) > maxNodeTaints {
		errs = append(errs, field.TooMany(p, len(taints), maxNodeTaints))
	}
	for i, t := range taints {
		ip := p.Index(i)
		if t.Key == "" {
			errs = append(errs, field.Required(ip.Child("key"), "a qualified name, such as nvidia.com/gpu"))
		} else if msgs := validation.IsQualifiedName(t.Key); len(msgs) > 0 {
			errs = append(errs, field.Invalid(ip.Child("key"), t.Key, strings.Join(msgs, "; ")))
		}
		if msgs := validation.IsValidLabelValue(t.Value); len(msgs) > 0 {
			errs = append(errs, field.Invalid(ip.Child("value"), t.Value, strings.Join(msgs, "; ")))
		}
		if t.Effect == "" {
			errs = append(errs, field.Required(ip.Child("effect"), "NoSchedule, PreferNoSchedule or NoExecute"))
		} else if !slices.Contains(taintEffects, string(t.Effect)) {
			errs = append(errs, field.NotSupported(ip.Child("effect"), t.Effect, taintEffects))
		}
		if slices.ContainsFunc(taints[:i], func(u NodeTaint) bool { return u.Key == t.Key && u.Effect == t.Effect }) {
			errs = append(errs, field.Duplicate(ip, t.Key+":"+string(t.Effect)))
		}
	}
	return errs
}
