package lambda

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
)

// GPUTypes maps the GPU model of a Lambda instance type name to the canonical
// GPU type. The model is the part of the name after "gpu_<N>x_", split on
// "_"; the longest leading run of parts that is a key here wins, so
// "a100_80gb_sxm4" resolves through "a100_80gb" and "h100_sxm5gdr" through
// "h100". Form-factor suffixes (pcie, sxm4, sxm5, sxm6, gdr) therefore need no
// entry of their own. A model with no entry (rtx6000: the Turing Quadro RTX
// 6000, which no canonical type names) is left out of the catalog.
var GPUTypes = map[string]string{
	"a10":       "A10",
	"a40":       "A40",
	"a4000":     "A4000",
	"a5000":     "A5000",
	"a6000":     "A6000",
	"a100":      "A100",
	"a100_40gb": "A100",
	"a100_80gb": "A100-80GB",
	"b200":      "B200",
	"gh200":     "GH200",
	"h100":      "H100",
	"h200":      "H200",
	"l4":        "L4",
	"l40":       "L40",
	"l40s":      "L40S",
	"rtx3090":   "RTX3090",
	"rtx4090":   "RTX4090",
	"rtx5090":   "RTX5090",
	"v100":      "V100",
	"v100_32gb": "V100-32GB",
}

// Regions maps Lambda's native region codes to canonical regions: every
// value of the spec's PublicRegionCode enum (a test walks the enum of the
// spec file itself), plus the codes public clients have seen in Lambda's
// answers outside the 1.8.3 enum (europe-south-1, us-southeast-1 and the
// older australia-southeast-1: SkyPilot's and dstack's Lambda region lists).
// US regions keep their names; the others take the AWS-style name of the
// same place. A code missing here is mapped by CanonicalRegion's rule, so a
// region Lambda adds is never dropped from the catalog.
var Regions = map[string]string{
	"us-east-1":             "us-east-1",
	"us-east-2":             "us-east-2",
	"us-east-3":             "us-east-3",
	"us-west-1":             "us-west-1",
	"us-west-2":             "us-west-2",
	"us-west-3":             "us-west-3",
	"us-south-1":            "us-south-1",
	"us-south-2":            "us-south-2",
	"us-south-3":            "us-south-3",
	"us-midwest-1":          "us-midwest-1",
	"us-midwest-2":          "us-midwest-2",
	"us-southeast-1":        "us-southeast-1",
	"europe-central-1":      "eu-central-1",
	"europe-south-1":        "eu-south-1",
	"asia-south-1":          "ap-south-1",
	"asia-northeast-1":      "ap-northeast-1",
	"asia-northeast-2":      "ap-northeast-2",
	"australia-east-1":      "ap-southeast-2",
	"australia-southeast-1": "ap-southeast-2",
	"me-west-1":             "me-west-1",
}

// regionPrefixes rename the continent of a native code Regions does not
// know, as Regions does for the ones it knows.
var regionPrefixes = [][2]string{{"europe-", "eu-"}, {"asia-", "ap-"}, {"australia-", "ap-"}}

// CanonicalRegion is the canonical region of a native Lambda region code:
// Regions' entry, or for a code it lacks the code with its continent
// renamed (europe- to eu-, asia- and australia- to ap-) and otherwise kept.
// ok is false only for an empty code.
func CanonicalRegion(native string) (region string, ok bool) {
	if r, known := Regions[native]; known {
		return r, true
	}
	if native == "" {
		return "", false
	}
	for _, p := range regionPrefixes {
		if rest, found := strings.CutPrefix(native, p[0]); found {
			return p[1] + rest, true
		}
	}
	return native, true
}

// CanonicalGPU parses a Lambda instance type name of the form
// gpu_<N>x_<model> into its canonical GPU type and GPU count. ok is false for
// names of another form (CPU types) and for models GPUTypes does not know.
func CanonicalGPU(typeName string) (gpuType string, count int, ok bool) {
	rest, found := strings.CutPrefix(typeName, "gpu_")
	if !found {
		return "", 0, false
	}
	n, model, found := strings.Cut(rest, "x_")
	if !found {
		return "", 0, false
	}
	count, err := strconv.Atoi(n)
	if err != nil || count <= 0 || strconv.Itoa(count) != n {
		return "", 0, false
	}
	parts := strings.Split(model, "_")
	for i := len(parts); i > 0; i-- {
		if g, known := GPUTypes[strings.Join(parts[:i], "_")]; known {
			return g, count, true
		}
	}
	return "", 0, false
}

// instanceTypesEnvelope is the 200 body of GET /api/v1/instance-types.
type instanceTypesEnvelope struct {
	Data lambdaapi.InstanceTypes `json:"data"`
}

// instancesEnvelope is the 200 body of GET /api/v1/instances.
type instancesEnvelope struct {
	Data []lambdaapi.Instance `json:"data"`
}

// NormalizeOffers decodes a GET /api/v1/instance-types body and returns one
// on-demand offer per (instance type, region with capacity available), sorted
// by instance type then region. Lambda sells no spot capacity. Types that map
// to no canonical GPU, whose specs.gpus disagrees with the count in their
// name, or that carry no positive price are skipped, as are regions without
// a name; a region code Regions lacks is named by CanonicalRegion's rule.
func NormalizeOffers(body []byte) ([]providers.Offer, error) {
	var env instanceTypesEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decoding instance types: %w", err)
	}
	var offers []providers.Offer
	for key, item := range env.Data {
		t := item.InstanceType
		if t.Name == "" {
			t.Name = key
		}
		gpu, count, ok := CanonicalGPU(t.Name)
		if !ok || t.Specs.Gpus != count || t.PriceCentsPerHour <= 0 {
			continue
		}
		price := float64(t.PriceCentsPerHour) / 100
		for _, r := range item.RegionsWithCapacityAvailable {
			native := string(r.Name)
			region, ok := CanonicalRegion(native)
			if !ok {
				continue
			}
			offers = append(offers, providers.Offer{
				Provider:       providers.LambdaLabs,
				InstanceType:   t.Name,
				GPUType:        gpu,
				GPUCount:       count,
				Region:         region,
				ProviderRegion: native,
				Capacity:       providers.OnDemand,
				HourlyPrice:    price,
				Available:      true,
				PriceSource:    providers.PriceSourceAPI,
			})
		}
	}
	slices.SortFunc(offers, func(a, b providers.Offer) int {
		return cmp.Or(cmp.Compare(a.InstanceType, b.InstanceType), cmp.Compare(a.ProviderRegion, b.ProviderRegion))
	})
	// A region listed twice for one type yields one offer.
	return slices.CompactFunc(offers, func(a, b providers.Offer) bool { return a.ID() == b.ID() }), nil
}

// NormalizeInstances decodes a GET /api/v1/instances body and returns the
// operator's instances (name starting with providers.MachineNamePrefix) with
// their normalized state.
func NormalizeInstances(body []byte) ([]providers.Instance, error) {
	var env instancesEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decoding instances: %w", err)
	}
	out := make([]providers.Instance, 0, len(env.Data))
	for _, in := range env.Data {
		if in.Name == nil || !providers.IsOperatorMachine(*in.Name) {
			continue
		}
		out = append(out, toInstance(in))
	}
	return out, nil
}

// NormalizeState maps a Lambda instance status onto the normalized states.
// An unhealthy instance still exists and bills, so it counts as running (its
// NativeState says unhealthy); an unknown status is treated as pending so the
// caller waits instead of replacing a machine it does not understand.
func NormalizeState(status string) providers.InstanceState {
	switch lambdaapi.InstanceStatus(status) {
	case lambdaapi.Booting:
		return providers.StateBooting
	case lambdaapi.Active, lambdaapi.Unhealthy:
		return providers.StateRunning
	case lambdaapi.Terminating:
		return providers.StateTerminating
	case lambdaapi.Terminated:
		return providers.StateTerminated
	case lambdaapi.Preempted:
		return providers.StateInterrupted
	default:
		return providers.StatePending
	}
}

func toInstance(in lambdaapi.Instance) providers.Instance {
	return providers.Instance{
		Provider:       providers.LambdaLabs,
		ID:             in.Id,
		Name:           deref(in.Name),
		InstanceType:   in.InstanceType.Name,
		ProviderRegion: string(in.Region.Name),
		Spot:           false,
		State:          NormalizeState(string(in.Status)),
		NativeState:    string(in.Status),
		PublicIP:       deref(in.Ip),
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
