// Package specreq maps a GPURequest's spec onto the selector's Request. It is
// the one place that mapping lives, so the controller and the `offers` CLI
// rank offers for the same spec in exactly the same way.
//
// It sits in its own package, rather than in pkg/selector, so the selector
// stays free of the Kubernetes API types.
package specreq

import (
	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

// RequestFromSpec returns the selector.Request for a GPURequest's spec,
// filling in the defaults the API server would apply: a gpuCount of 0 means
// 1 and an empty regionPolicy means Ordered. A single region is a one-entry
// preference list (when both region and regionPreference are set, which
// admission rejects, region wins). Unset price caps are 0, which the
// selector reads as no cap. A spec with a container is served by container
// machines (providers.Container), any other by VMs (providers.VM).
// NoBootstrap is left nil: which providers run the request's bootstrap
// template is the caller's to work out, from the template it reads.
//
// The returned Request shares the spec's regionPreference slice.
func RequestFromSpec(spec tgpv1.GPURequestSpec) selector.Request {
	s := selector.Request{
		GPUType:  spec.GPUType,
		GPUCount: int(spec.GPUCount),
		Policy:   selector.Policy(spec.RegionPolicy),
		Spot:     spec.SpotInstance,
		Provider: spec.Provider,
		Regions:  spec.RegionPreference,
		Kind:     providers.VM,
	}
	if spec.Container != nil {
		s.Kind = providers.Container
	}
	if s.GPUCount == 0 {
		s.GPUCount = 1
	}
	if s.Policy == "" {
		s.Policy = selector.Ordered
	}
	if spec.Region != "" {
		s.Regions = []string{spec.Region}
	}
	if spec.MaxPrice != nil {
		s.MaxPrice = *spec.MaxPrice
	}
	if spec.MaxSpotPrice != nil {
		s.MaxSpotPrice = *spec.MaxSpotPrice
	}
	return s
}
