package v1_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// specCase is one spec, written as the YAML under `spec:`, that the CRD's
// schema and ValidateSpec must both accept (field == "") or both refuse.
type specCase struct {
	name string
	spec string
	// field must appear in the API server's error (it prints map entries
	// as spec.nodeLabels.<key> and reports map and list rules at the map
	// or list), and every ValidateSpec error must lie under it.
	field string
	// goField is the path at least one ValidateSpec error has exactly
	// (spec.nodeLabels[<key>], spec.nodeTaints[1]); field when empty.
	goField string
}

// specCases is the one table of good and bad specs. TestAdmission runs it
// through a real API server with the generated CRD and through ValidateSpec
// and fails when they disagree; TestValidateSpec runs the Go half alone, so
// it needs no control plane.
var specCases = []specCase{
	// Durations: what time.ParseDuration accepts, and only positive values.
	{name: "maxLifetime 90m", spec: "gpuType: A100\nmaxLifetime: 90m"},
	{name: "idleTimeout 1h30m", spec: "gpuType: A100\nidleTimeout: 1h30m"},
	{name: "maxLifetime 1.5h", spec: "gpuType: A100\nmaxLifetime: 1.5h"},
	{name: "maxLifetime .5h (Go accepts a leading dot)", spec: "gpuType: A100\nmaxLifetime: .5h"},
	{name: "maxLifetime 1d", spec: "gpuType: A100\nmaxLifetime: 1d", field: "spec.maxLifetime"},
	{name: "maxLifetime 2w", spec: "gpuType: A100\nmaxLifetime: 2w", field: "spec.maxLifetime"},
	{name: "idleTimeout banana", spec: "gpuType: A100\nidleTimeout: banana", field: "spec.idleTimeout"},
	{name: "maxLifetime 0s", spec: "gpuType: A100\nmaxLifetime: 0s", field: "spec.maxLifetime"},
	{name: "maxLifetime 0", spec: `gpuType: A100
maxLifetime: "0"`, field: "spec.maxLifetime"},
	{name: "idleTimeout -1s", spec: "gpuType: A100\nidleTimeout: -1s", field: "spec.idleTimeout"},
	{name: "idleTimeout empty", spec: `gpuType: A100
idleTimeout: ""`, field: "spec.idleTimeout"},
	{name: "idleTimeout 30 without a unit", spec: `gpuType: A100
idleTimeout: "30"`, field: "spec.idleTimeout"},
	{name: "maxLifetime 1H (units are lower-case)", spec: "gpuType: A100\nmaxLifetime: 1H", field: "spec.maxLifetime"},
	{name: "maxLifetime overflows time.Duration", spec: "gpuType: A100\nmaxLifetime: 9999999999999h", field: "spec.maxLifetime"},
	{name: "maxLifetime over 64 characters", spec: "gpuType: A100\nmaxLifetime: " + strings.Repeat("1s", 33), field: "spec.maxLifetime"},

	// Node labels: qualified-name keys, label values, reserved prefixes.
	{name: "label example.com/team", spec: "gpuType: A100\nnodeLabels: {example.com/team: ml}"},
	{name: "label with an empty value", spec: `gpuType: A100
nodeLabels: {workload: ""}`},
	{name: "label key notkubernetes.io/x (not a subdomain)", spec: "gpuType: A100\nnodeLabels: {notkubernetes.io/x: a}"},
	{name: "label key kubernetes.io without a slash (a plain name)", spec: "gpuType: A100\nnodeLabels: {kubernetes.io: a}"},
	{name: "label key with a 63-character name", spec: "gpuType: A100\nnodeLabels: {example.com/" + strings.Repeat("n", 63) + ": a}"},
	{name: "label value of 63 characters", spec: "gpuType: A100\nnodeLabels: {team: " + strings.Repeat("v", 63) + "}"},
	{name: "label key with a space", spec: `gpuType: A100
nodeLabels: {"bad key": a}`, field: "spec.nodeLabels", goField: "spec.nodeLabels[bad key]"},
	{name: "label key with a comma", spec: `gpuType: A100
nodeLabels: {"a,b": a}`, field: "spec.nodeLabels", goField: "spec.nodeLabels[a,b]"},
	{name: "label key with =", spec: `gpuType: A100
nodeLabels: {"a=b": a}`, field: "spec.nodeLabels", goField: "spec.nodeLabels[a=b]"},
	{name: "label key with a 64-character name", spec: "gpuType: A100\nnodeLabels: {example.com/" + strings.Repeat("n", 64) + ": a}",
		field: "spec.nodeLabels", goField: "spec.nodeLabels[example.com/" + strings.Repeat("n", 64) + "]"},
	{name: "label key with an upper-case prefix", spec: "gpuType: A100\nnodeLabels: {Example.com/team: a}", field: "spec.nodeLabels", goField: "spec.nodeLabels[Example.com/team]"},
	{name: "label value with a newline", spec: `gpuType: A100
nodeLabels: {team: "a\nb"}`, field: "spec.nodeLabels", goField: "spec.nodeLabels[team]"},
	{name: "label value over 63 characters", spec: "gpuType: A100\nnodeLabels: {team: " + strings.Repeat("v", 64) + "}", field: "spec.nodeLabels", goField: "spec.nodeLabels[team]"},
	{name: "label value with a space", spec: `gpuType: A100
nodeLabels: {team: "a b"}`, field: "spec.nodeLabels", goField: "spec.nodeLabels[team]"},
	{name: "reserved kubernetes.io/hostname", spec: "gpuType: A100\nnodeLabels: {kubernetes.io/hostname: x}",
		field: "spec.nodeLabels", goField: "spec.nodeLabels[kubernetes.io/hostname]"},
	{name: "reserved node-role.kubernetes.io/control-plane", spec: `gpuType: A100
nodeLabels: {node-role.kubernetes.io/control-plane: ""}`, field: "spec.nodeLabels", goField: "spec.nodeLabels[node-role.kubernetes.io/control-plane]"},
	{name: "reserved node-restriction.kubernetes.io/x", spec: "gpuType: A100\nnodeLabels: {node-restriction.kubernetes.io/x: y}",
		field: "spec.nodeLabels", goField: "spec.nodeLabels[node-restriction.kubernetes.io/x]"},
	{name: "reserved k8s.io/x", spec: "gpuType: A100\nnodeLabels: {k8s.io/x: y}", field: "spec.nodeLabels", goField: "spec.nodeLabels[k8s.io/x]"},
	{name: "reserved foo.k8s.io/x", spec: "gpuType: A100\nnodeLabels: {foo.k8s.io/x: y}", field: "spec.nodeLabels", goField: "spec.nodeLabels[foo.k8s.io/x]"},
	{name: "reserved tgp.solanyn.com/request", spec: "gpuType: A100\nnodeLabels: {tgp.solanyn.com/request: y}",
		field: "spec.nodeLabels", goField: "spec.nodeLabels[tgp.solanyn.com/request]"},
	{name: "reserved a.tgp.solanyn.com/x", spec: "gpuType: A100\nnodeLabels: {a.tgp.solanyn.com/x: y}", field: "spec.nodeLabels", goField: "spec.nodeLabels[a.tgp.solanyn.com/x]"},
	{name: "64 labels", spec: "gpuType: A100\nnodeLabels: " + labelMap(64)},
	{name: "65 labels", spec: "gpuType: A100\nnodeLabels: " + labelMap(65), field: "spec.nodeLabels"},

	// Node taints.
	{name: "taint NoSchedule", spec: "gpuType: A100\nnodeTaints: [{key: nvidia.com/gpu, value: \"true\", effect: NoSchedule}]"},
	{name: "taint PreferNoSchedule and NoExecute on one key", spec: "gpuType: A100\nnodeTaints: [{key: gpu, effect: PreferNoSchedule}, {key: gpu, effect: NoExecute}]"},
	{name: "taint with an empty key", spec: `gpuType: A100
nodeTaints: [{key: "", effect: NoSchedule}]`, field: "spec.nodeTaints[0].key"},
	{name: "taint key with a space", spec: `gpuType: A100
nodeTaints: [{key: "a b", effect: NoSchedule}]`, field: "spec.nodeTaints[0].key"},
	{name: "taint value with a space", spec: `gpuType: A100
nodeTaints: [{key: gpu, value: "a b", effect: NoSchedule}]`, field: "spec.nodeTaints[0].value"},
	{name: "taint effect Bogus", spec: "gpuType: A100\nnodeTaints: [{key: gpu, effect: Bogus}]", field: "spec.nodeTaints[0].effect"},
	{name: "taint without an effect", spec: "gpuType: A100\nnodeTaints: [{key: gpu}]", field: "spec.nodeTaints[0].effect"},
	{name: "two taints with one key and effect", spec: "gpuType: A100\nnodeTaints: [{key: gpu, effect: NoSchedule}, {key: gpu, value: x, effect: NoSchedule}]",
		field: "spec.nodeTaints", goField: "spec.nodeTaints[1]"},
	{name: "33 taints", spec: "gpuType: A100\nnodeTaints: " + taints(33), field: "spec.nodeTaints"},

	// The rules that were there before, on one object.
	{name: "gpuCount 16", spec: "gpuType: A100\ngpuCount: 16"},
	{name: "gpuCount 17", spec: "gpuType: A100\ngpuCount: 17", field: "spec.gpuCount"},
	{name: "gpuCount -1", spec: "gpuType: A100\ngpuCount: -1", field: "spec.gpuCount"},
	{name: "empty gpuType", spec: `gpuType: ""`, field: "spec.gpuType"},
	{name: "gpuType over 32 characters", spec: "gpuType: " + strings.Repeat("G", 33), field: "spec.gpuType"},
	{name: "negative maxPrice", spec: "gpuType: A100\nmaxPrice: -1", field: "spec.maxPrice"},
	{name: "zero maxPrice", spec: "gpuType: A100\nmaxPrice: 0", field: "spec.maxPrice"},
	{name: "negative maxSpotPrice", spec: "gpuType: A100\nspotInstance: true\nmaxSpotPrice: -0.1", field: "spec.maxSpotPrice"},
	{name: "maxSpotPrice without spotInstance", spec: "gpuType: A100\nmaxSpotPrice: 0.2", field: "spec.maxSpotPrice"},
	{name: "maxSpotPrice with spotInstance false", spec: "gpuType: A100\nspotInstance: false\nmaxSpotPrice: 0.2", field: "spec.maxSpotPrice"},
	{name: "maxSpotPrice above maxPrice", spec: "gpuType: A100\nspotInstance: true\nmaxSpotPrice: 2\nmaxPrice: 1", field: "spec.maxSpotPrice"},
	{name: "maxSpotPrice equal to maxPrice", spec: "gpuType: A100\nspotInstance: true\nmaxSpotPrice: 1\nmaxPrice: 1"},
	{name: "region and regionPreference", spec: "gpuType: A100\nregion: us-west\nregionPreference: [us-east-1]", field: "spec.regionPreference"},
	{name: "duplicate regionPreference", spec: "gpuType: A100\nregionPreference: [us-east-1, us-east-1]", field: "spec.regionPreference", goField: "spec.regionPreference[1]"},
	{name: "empty regionPreference", spec: "gpuType: A100\nregionPreference: []", field: "spec.regionPreference"},
	{name: "17 regions", spec: "gpuType: A100\nregionPreference: " + regions(17), field: "spec.regionPreference"},
	{name: "region with upper case", spec: "gpuType: A100\nregion: US-West", field: "spec.region"},
	{name: "region with a double dash", spec: "gpuType: A100\nregion: us--west", field: "spec.region"},
	{name: "region over 64 characters", spec: "gpuType: A100\nregion: " + strings.Repeat("a", 65), field: "spec.region"},
	{name: "regionPreference entry with a trailing dash", spec: "gpuType: A100\nregionPreference: [us-west-]", field: "spec.regionPreference[0]"},
	{name: "regionPolicy LowestPrice", spec: "gpuType: A100\nregionPreference: [us-west, eu]\nregionPolicy: LowestPrice"},
	{name: "unknown regionPolicy", spec: "gpuType: A100\nregionPolicy: Cheapest", field: "spec.regionPolicy"},
	{name: "provider runpod", spec: "gpuType: A100\nprovider: runpod"},
	{name: "provider vastai", spec: "gpuType: RTX4090\nprovider: vastai"},
	{name: "unknown provider", spec: "gpuType: A100\nprovider: aws", field: "spec.provider"},
	{name: "bootstrap without secretName", spec: `gpuType: A100
bootstrap: {secretName: ""}`, field: "spec.bootstrap.secretName"},

	{name: "bootstrap with a script key", spec: `gpuType: A100
bootstrap: {secretName: join, key: cloud-init, scriptKey: join.sh}`},
	{name: "bootstrap with valuesFrom", spec: `gpuType: A100
bootstrap: {secretName: join, valuesFrom: {secretName: tailscale}}`},
	{name: "bootstrap valuesFrom without secretName", spec: `gpuType: A100
bootstrap: {secretName: join, valuesFrom: {secretName: ""}}`, field: "spec.bootstrap.valuesFrom.secretName"},
	{name: "bootstrap valuesFrom secretName over 253 characters", spec: "gpuType: A100\nbootstrap: {secretName: join, valuesFrom: {secretName: " + strings.Repeat("a", 254) + "}}",
		field: "spec.bootstrap.valuesFrom.secretName"},

	// Container requests.
	{name: "a container", spec: `gpuType: RTX4090
container:
  image: runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04
  args: [python, train.py]
  env: [{name: EPOCHS, value: "3"}, {name: HF_TOKEN, valueFrom: {secretName: hf, key: token}}]
  ports: [{port: 8888, protocol: http}, {port: 22}]`},
	{name: "container with maxLifetime", spec: "gpuType: RTX4090\nmaxLifetime: 2h\ncontainer: {image: busybox}"},
	{name: "container without an image", spec: `gpuType: RTX4090
container: {image: ""}`, field: "spec.container.image"},
	{name: "container image with a space", spec: `gpuType: RTX4090
container: {image: "busybox latest"}`, field: "spec.container.image"},
	{name: "container with idleTimeout", spec: "gpuType: RTX4090\nidleTimeout: 30m\ncontainer: {image: busybox}", field: "spec.idleTimeout"},
	{name: "container with nodeLabels", spec: "gpuType: RTX4090\nnodeLabels: {team: ml}\ncontainer: {image: busybox}", field: "spec.container"},
	{name: "container with a bootstrap", spec: "gpuType: RTX4090\nbootstrap: {secretName: s}\ncontainer: {image: busybox}", field: "spec.container"},
	{name: "env with value and valueFrom", spec: `gpuType: RTX4090
container: {image: busybox, env: [{name: A, value: x, valueFrom: {secretName: s, key: k}}]}`, field: "spec.container.env[0]"},
	{name: "env with neither value nor valueFrom", spec: `gpuType: RTX4090
container: {image: busybox, env: [{name: A}]}`, field: "spec.container.env[0]"},
	{name: "env name starting with a digit", spec: `gpuType: RTX4090
container: {image: busybox, env: [{name: 1A, value: x}]}`, field: "spec.container.env[0].name"},
	{name: "env names repeated", spec: `gpuType: RTX4090
container: {image: busybox, env: [{name: A, value: x}, {name: A, value: y}]}`, field: "spec.container.env[1]"},
	{name: "port 0", spec: `gpuType: RTX4090
container: {image: busybox, ports: [{port: 0}]}`, field: "spec.container.ports[0].port"},
	{name: "port 70000", spec: `gpuType: RTX4090
container: {image: busybox, ports: [{port: 70000}]}`, field: "spec.container.ports[0].port"},
	{name: "port protocol udp", spec: `gpuType: RTX4090
container: {image: busybox, ports: [{port: 53, protocol: udp}]}`, field: "spec.container.ports[0].protocol"},
	{name: "ports repeated", spec: `gpuType: RTX4090
container: {image: busybox, ports: [{port: 22}, {port: 22, protocol: http}]}`, field: "spec.container.ports[1]"},

	// Everything at once, as in manifests/examples/bootstrapped-inference.yaml.
	{name: "a full spec", spec: `gpuType: A6000
maxPrice: 2.0
maxLifetime: 8h
idleTimeout: 30m
bootstrap: {secretName: gpu-node-bootstrap, key: userdata}
nodeLabels: {workload: inference, example.com/team: ml}
nodeTaints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]`},
}

func labelMap(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("example.com/l%d: v", i)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func taints(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("{key: t%d, effect: NoSchedule}", i)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func regions(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("r%d", i)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// validateYAML decodes a case's spec as the API server's JSON reaches the
// controller (strictly, so a typo in the table fails) and validates it.
func validateYAML(t *testing.T, spec string) field.ErrorList {
	t.Helper()
	var s tgpv1.GPURequestSpec
	if err := yaml.UnmarshalStrict([]byte(spec), &s); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	return tgpv1.ValidateSpec(&s, field.NewPath("spec"))
}

// checkNames fails unless ValidateSpec's errors for a refused case all lie
// under tc.field and one of them is at goField exactly.
func checkNames(t *testing.T, errs field.ErrorList, tc specCase) {
	t.Helper()
	want := tc.goField
	if want == "" {
		want = tc.field
	}
	exact := false
	for _, e := range errs {
		if !strings.HasPrefix(e.Field, tc.field) {
			t.Errorf("ValidateSpec error %q is not under %s", e, tc.field)
		}
		exact = exact || e.Field == want
	}
	if !exact {
		t.Errorf("no ValidateSpec error names %s: %v", want, errs.ToAggregate())
	}
}

func TestValidateSpec(t *testing.T) {
	for _, tc := range specCases {
		t.Run(tc.name, func(t *testing.T) {
			errs := validateYAML(t, tc.spec)
			switch {
			case tc.field == "" && len(errs) > 0:
				t.Fatalf("refused, want accepted: %v", errs.ToAggregate())
			case tc.field != "" && len(errs) == 0:
				t.Fatalf("accepted, want an error naming %s", tc.field)
			case tc.field != "":
				checkNames(t, errs, tc)
			}
		})
	}
}

func TestIsReservedLabelKey(t *testing.T) {
	for key, want := range map[string]bool{
		"kubernetes.io/hostname":                true,
		"node-role.kubernetes.io/control-plane": true,
		"node-restriction.kubernetes.io/x":      true,
		"k8s.io/x":                              true,
		"foo.k8s.io/x":                          true,
		"tgp.solanyn.com/request":               true,
		"a.tgp.solanyn.com/x":                   true,
		"example.com/team":                      false,
		"notkubernetes.io/x":                    false,
		"kubernetes.io.example.com/x":           false,
		"kubernetes.io":                         false,
		"team":                                  false,
	} {
		if got := tgpv1.IsReservedLabelKey(key); got != want {
			t.Errorf("IsReservedLabelKey(%q) = %v, want %v", key, got, want)
		}
	}
}
