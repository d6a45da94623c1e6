package specreq

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

func ptr[T any](v T) *T { return &v }

func TestRequestFromSpec(t *testing.T) {
	tests := []struct {
		name string
		spec tgpv1.GPURequestSpec
		want selector.Request
	}{{
		name: "defaults: one GPU, Ordered, any region, no caps",
		spec: tgpv1.GPURequestSpec{GPUType: "A100"},
		want: selector.Request{GPUType: "A100", GPUCount: 1, Policy: selector.Ordered, Kind: providers.VM},
	}, {
		name: "spot-training-job",
		spec: tgpv1.GPURequestSpec{GPUType: "RTX4090", Region: "us-west", SpotInstance: true, MaxSpotPrice: ptr(0.25), MaxPrice: ptr(0.50)},
		want: selector.Request{GPUType: "RTX4090", GPUCount: 1, Policy: selector.Ordered, Regions: []string{"us-west"},
			Spot: true, MaxSpotPrice: 0.25, MaxPrice: 0.50, Kind: providers.VM},
	}, {
		name: "region-aware-job with LowestPrice and a provider pin",
		spec: tgpv1.GPURequestSpec{GPUType: "H100", GPUCount: 8, RegionPreference: []string{"us-west-1", "us-east-1"},
			RegionPolicy: tgpv1.RegionPolicyLowestPrice, SpotInstance: true, MaxPrice: ptr(3.0), Provider: "runpod"},
		want: selector.Request{GPUType: "H100", GPUCount: 8, Policy: selector.LowestPrice, Regions: []string{"us-west-1", "us-east-1"},
			Spot: true, MaxPrice: 3.0, Provider: "runpod", Kind: providers.VM},
	}, {
		name: "region wins over regionPreference",
		spec: tgpv1.GPURequestSpec{GPUType: "H100", Region: "eu", RegionPreference: []string{"us-west-1"}},
		want: selector.Request{GPUType: "H100", GPUCount: 1, Policy: selector.Ordered, Regions: []string{"eu"}, Kind: providers.VM},
	}, {
		name: "a container is served by container machines",
		spec: tgpv1.GPURequestSpec{GPUType: "RTX4090", Container: &tgpv1.ContainerSpec{Image: "vllm/vllm-openai:v0.6.0"}},
		want: selector.Request{GPUType: "RTX4090", GPUCount: 1, Policy: selector.Ordered, Kind: providers.Container},
	}, {
		name: "an empty container is still a container",
		spec: tgpv1.GPURequestSpec{GPUType: "RTX4090", Provider: "runpod", Container: &tgpv1.ContainerSpec{}},
		want: selector.Request{GPUType: "RTX4090", GPUCount: 1, Policy: selector.Ordered, Provider: "runpod", Kind: providers.Container},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, RequestFromSpec(tt.spec)); diff != "" {
				t.Errorf("RequestFromSpec (-want +got):\n%s", diff)
			}
		})
	}
}
