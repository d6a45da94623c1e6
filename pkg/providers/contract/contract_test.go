package contract_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/contract"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaispec"
)

// starter runs one provider's simulator through stack.Start and builds the
// real adapter with stack.Adapters, as the demo and integration tests do.
func starter(provider string) func(t *testing.T, cfg cloudsim.Config) contract.Env {
	return func(t *testing.T, cfg cloudsim.Config) contract.Env {
		t.Helper()
		var sc stack.Config
		switch provider {
		case providers.LambdaLabs:
			sc.Lambda = &cfg
		case providers.RunPod:
			sc.RunPod = &cfg
		case providers.Paperspace:
			sc.Paperspace = &cfg
		case providers.VastAI:
			// The marketplace is hosts; the harness catalog is theirs.
			sc.VastAI = &vastaisim.Config{Config: cfg, Hosts: vastHosts}
		default:
			t.Fatalf("unknown provider %q", provider)
		}
		st, err := stack.Start(sc, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		env := contract.Env{
			Sim: st.Simulator(provider),
			New: func(t *testing.T, o contract.Options) providers.Provider {
				t.Helper()
				opts := stack.AdapterOptions{Clock: o.Clock, CallTimeout: 10 * time.Second, Transport: validating(t)}
				if o.Key != "" {
					opts.Keys = map[string]string{provider: o.Key}
				}
				ps, err := st.Adapters(opts)
				if err != nil {
					t.Fatal(err)
				}
				if len(ps) != 1 {
					t.Fatalf("stack built %d adapters, want 1", len(ps))
				}
				return ps[0]
			},
		}
		if st.VastAI != nil {
			env.Bootstrap = func(ctx context.Context, in providers.Instance, script string) error {
				_, err := st.VastAIBootstrap(ctx, in, script)
				return err
			}
			env.Outbid = st.VastAI.Outbid
		}
		return env
	}
}

// validating is the adapters' transport in the contract suite: every
// request an adapter sends and every answer a simulator gives, errors
// included, is checked against the provider's official OpenAPI document
// (../shared/provider-specs; a missing document fails the test).
func validating(t *testing.T) func(provider string) http.RoundTripper {
	return func(provider string) http.RoundTripper {
		if provider == providers.VastAI {
			// Vast.ai's document declares no 5xx, no 429 on its search and no
			// 401 on destroy and changeBid, and the adapter sends create's env
			// as the object Vast.ai's guide requires where the spec says a
			// string: see vastaispec, which validates everything else.
			return vastaispec.Transport(t, nil)
		}
		spec := spectest.Load(t, provider)
		var opts []spectest.Option
		if provider == providers.LambdaLabs {
			// Lambda's document declares no 429 or 5xx for any operation;
			// its docs describe rate limiting (429) in prose, and the suite
			// injects 5xx faults.
			opts = append(opts,
				spectest.AllowStatus(http.StatusTooManyRequests, "Lambda documents its rate limit in prose, not in the spec"),
				spectest.AllowStatus(http.StatusInternalServerError, "injected fault"),
				spectest.AllowStatus(http.StatusServiceUnavailable, "injected fault"))
		}
		return spec.Transport(t, nil, opts...)
	}
}

func TestLambda(t *testing.T) {
	t.Parallel()
	contract.Run(t, contract.Harness{
		Provider: providers.LambdaLabs,
		Start:    starter(providers.LambdaLabs),
		// Lambda prices are per instance.
		Catalog: []cloudsim.CatalogEntry{
			{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: 5},
			{InstanceType: "gpu_8x_a100_80gb_sxm4", GPUs: 8, Region: "us-east-1", OnDemandPrice: 14.32, Capacity: -1},
			{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "europe-central-1", OnDemandPrice: 0.75, Capacity: 2},
			{InstanceType: "gpu_2x_a6000", GPUs: 2, Region: "us-west-2", OnDemandPrice: 1.60, Capacity: 0},
			{InstanceType: "gpu_1x_rtx6000", GPUs: 1, Region: "us-south-1", OnDemandPrice: 0.50, Capacity: 3},
		},
		Want: []providers.Offer{
			{Provider: providers.LambdaLabs, InstanceType: "gpu_1x_h100_pcie", GPUType: "H100", GPUCount: 1, Region: "us-west-1",
				ProviderRegion: "us-west-1", Capacity: providers.OnDemand, HourlyPrice: 2.49, Available: true, PriceSource: providers.PriceSourceAPI},
			{Provider: providers.LambdaLabs, InstanceType: "gpu_8x_a100_80gb_sxm4", GPUType: "A100-80GB", GPUCount: 8, Region: "us-east-1",
				ProviderRegion: "us-east-1", Capacity: providers.OnDemand, HourlyPrice: 14.32, Available: true, PriceSource: providers.PriceSourceAPI},
			{Provider: providers.LambdaLabs, InstanceType: "gpu_1x_a10", GPUType: "A10", GPUCount: 1, Region: "eu-central-1",
				ProviderRegion: "europe-central-1", Capacity: providers.OnDemand, HourlyPrice: 0.75, Available: true, PriceSource: providers.PriceSourceAPI},
		},
		Absent: []providers.Offer{
			// Sold out: Lambda lists no region for it.
			{InstanceType: "gpu_2x_a6000", ProviderRegion: "us-west-2", Capacity: providers.OnDemand},
			// The Turing Quadro RTX 6000 has no canonical name.
			{InstanceType: "gpu_1x_rtx6000", ProviderRegion: "us-south-1", Capacity: providers.OnDemand},
		},
	})
}

func TestRunPod(t *testing.T) {
	t.Parallel()
	contract.Run(t, contract.Harness{
		Provider: providers.RunPod,
		Start:    starter(providers.RunPod),
		// RunPod sells no spot (REST v2 has no interruptible field): the
		// simulator ignores SpotPrice. Prices are per GPU; offers are whole
		// machines of every count up to the type's largest pod, and every
		// offer is a container.
		Catalog: []cloudsim.CatalogEntry{
			{InstanceType: "NVIDIA A100-SXM4-80GB", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 1.89, SpotPrice: 1.19, Capacity: 5},
			{InstanceType: "NVIDIA H100 80GB HBM3", GPUs: 2, Region: "EU-NL-1", OnDemandPrice: 2.99, Capacity: -1},
			{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 1, Region: "US-TX-3", OnDemandPrice: 0.69, SpotPrice: 0.34, Capacity: 3},
			{InstanceType: "AMD Instinct MI300X OAM", GPUs: 8, Region: "US-TX-3", OnDemandPrice: 2.49, Capacity: 3},
		},
		Want: []providers.Offer{
			{Provider: providers.RunPod, InstanceType: "NVIDIA A100-SXM4-80GB", GPUType: "A100-80GB", GPUCount: 4, Region: "us-west-1",
				ProviderRegion: "US-CA-2", Capacity: providers.OnDemand, HourlyPrice: 7.56, Available: true, PriceSource: providers.PriceSourceAPI, Kind: providers.Container},
			{Provider: providers.RunPod, InstanceType: "NVIDIA A100-SXM4-80GB", GPUType: "A100-80GB", GPUCount: 1, Region: "us-west-1",
				ProviderRegion: "US-CA-2", Capacity: providers.OnDemand, HourlyPrice: 1.89, Available: true, PriceSource: providers.PriceSourceAPI, Kind: providers.Container},
			{Provider: providers.RunPod, InstanceType: "NVIDIA A100-SXM4-80GB", GPUType: "A100-80GB", GPUCount: 3, Region: "us-west-1",
				ProviderRegion: "US-CA-2", Capacity: providers.OnDemand, HourlyPrice: 5.67, Available: true, PriceSource: providers.PriceSourceAPI, Kind: providers.Container},
			{Provider: providers.RunPod, InstanceType: "NVIDIA H100 80GB HBM3", GPUType: "H100", GPUCount: 2, Region: "eu-west-1",
				ProviderRegion: "EU-NL-1", Capacity: providers.OnDemand, HourlyPrice: 5.98, Available: true, PriceSource: providers.PriceSourceAPI, Kind: providers.Container},
			{Provider: providers.RunPod, InstanceType: "NVIDIA GeForce RTX 4090", GPUType: "RTX4090", GPUCount: 1, Region: "us-south-1",
				ProviderRegion: "US-TX-3", Capacity: providers.OnDemand, HourlyPrice: 0.69, Available: true, PriceSource: providers.PriceSourceAPI, Kind: providers.Container},
		},
		Absent: []providers.Offer{
			// No pod larger than the type's maxCount.
			{InstanceType: "NVIDIA H100 80GB HBM3", ProviderRegion: "EU-NL-1", Capacity: providers.OnDemand, GPUCount: 3},
			{InstanceType: "NVIDIA GeForce RTX 4090", ProviderRegion: "US-TX-3", Capacity: providers.OnDemand, GPUCount: 2},
			// No spot at all, whatever the catalog's SpotPrice says.
			{InstanceType: "NVIDIA A100-SXM4-80GB", ProviderRegion: "US-CA-2", Capacity: providers.Spot},
			{InstanceType: "NVIDIA GeForce RTX 4090", ProviderRegion: "US-TX-3", Capacity: providers.Spot},
			// No canonical name.
			{InstanceType: "AMD Instinct MI300X OAM", ProviderRegion: "US-TX-3", Capacity: providers.OnDemand},
		},
	})
}

func TestPaperspace(t *testing.T) {
	t.Parallel()
	// Paperspace publishes no prices: they come from the shipped table
	// (paperspace.DefaultPriceTable), whatever the simulator's catalog says.
	// Its ConfigMap override is tested in the paperspace package
	// (TestOffersWithConfigMapPrices).
	contract.Run(t, contract.Harness{
		Provider: providers.Paperspace,
		Start:    starter(providers.Paperspace),
		Catalog: []cloudsim.CatalogEntry{
			{InstanceType: "A100-80Gx4", GPUs: 4, Region: "ny2", Capacity: 5},
			{InstanceType: "H100", GPUs: 1, Region: "ams1", Capacity: 0},
			{InstanceType: "A6000", GPUs: 1, Region: "ca1", Capacity: -1},
			{InstanceType: "RTX4000", GPUs: 1, Region: "ny2", Capacity: 5},
		},
		Want: []providers.Offer{
			{Provider: providers.Paperspace, InstanceType: "A100-80Gx4", GPUType: "A100-80GB", GPUCount: 4, Region: "us-east-1",
				ProviderRegion: "ny2", Capacity: providers.OnDemand, HourlyPrice: 12.72, Available: true, PriceSource: providers.PriceSourceStatic},
			{Provider: providers.Paperspace, InstanceType: "H100", GPUType: "H100", GPUCount: 1, Region: "eu-west-1",
				ProviderRegion: "ams1", Capacity: providers.OnDemand, HourlyPrice: 5.95, Available: false, PriceSource: providers.PriceSourceStatic},
			{Provider: providers.Paperspace, InstanceType: "A6000", GPUType: "A6000", GPUCount: 1, Region: "us-west-1",
				ProviderRegion: "ca1", Capacity: providers.OnDemand, HourlyPrice: 1.89, Available: true, PriceSource: providers.PriceSourceStatic},
		},
		Absent: []providers.Offer{
			// The Quadro RTX4000 has no canonical name.
			{InstanceType: "RTX4000", ProviderRegion: "ny2", Capacity: providers.OnDemand},
		},
	})
}

// vastHosts is the Vast.ai simulator's marketplace in the contract: VM and
// container hosts, with and without bids, in a mapped and an unmapped
// location, and hosts the adapter's default search must leave out.
var vastHosts = []vastaisim.Host{
	{ID: 2001, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "California, US", DPHTotal: 0.42, MinBid: 0.18,
		Reliability: 0.995, Verified: true, VMsEnabled: true},
	{ID: 2002, GPUName: "RTX A6000", NumGPUs: 2, GPURAM: 49140, Geolocation: "North Holland, NL", DPHTotal: 0.9, MinBid: 0.4,
		Reliability: 0.99, Verified: true},
	{ID: 2003, GPUName: "A100 SXM4", NumGPUs: 8, GPURAM: 81920, Geolocation: "Texas, US", DPHTotal: 9.6,
		Reliability: 0.999, Verified: true, VMsEnabled: true},
	{ID: 2004, GPUName: "H100 SXM", NumGPUs: 1, GPURAM: 81559, Geolocation: "Istanbul, TR", DPHTotal: 2.2, MinBid: 1.1,
		Reliability: 0.98, Verified: true},
	// Left out: unverified, unreliable, an unmapped GPU.
	{ID: 2005, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US", DPHTotal: 0.2, MinBid: 0.08, Reliability: 0.999},
	{ID: 2006, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US", DPHTotal: 0.21, MinBid: 0.09, Reliability: 0.9, Verified: true},
	{ID: 2007, GPUName: "RTX 3080", NumGPUs: 1, GPURAM: 10240, Geolocation: "Texas, US", DPHTotal: 0.1, MinBid: 0.05, Reliability: 0.999, Verified: true},
}

func TestVastAI(t *testing.T) {
	t.Parallel()
	offer := func(ask, gpu string, n int, region, native string, c providers.CapacityType, price float64, k providers.MachineKind) providers.Offer {
		return providers.Offer{Provider: providers.VastAI, InstanceType: ask, GPUType: gpu, GPUCount: n, Region: region, ProviderRegion: native,
			Capacity: c, HourlyPrice: price, Available: true, PriceSource: providers.PriceSourceAPI, Kind: k}
	}
	contract.Run(t, contract.Harness{
		Provider: providers.VastAI,
		Start:    starter(providers.VastAI),
		// Every offer is one host's ask: on-demand at the host's dph_total,
		// interruptible at its min_bid, VM where the host has VMs enabled.
		Catalog: vastaisim.CatalogOf(vastHosts),
		Want: []providers.Offer{
			offer("2001", "RTX4090", 1, "us-west-1", "California, US", providers.OnDemand, 0.42, providers.VM),
			offer("2001", "RTX4090", 1, "us-west-1", "California, US", providers.Spot, 0.18, providers.VM),
			offer("2002", "A6000", 2, "eu-west-1", "North Holland, NL", providers.OnDemand, 0.9, providers.Container),
			offer("2002", "A6000", 2, "eu-west-1", "North Holland, NL", providers.Spot, 0.4, providers.Container),
			offer("2003", "A100-80GB", 8, "us-south-1", "Texas, US", providers.OnDemand, 9.6, providers.VM),
			// No table maps Turkey: kept under its country.
			offer("2004", "H100", 1, "tr-country-1", "Istanbul, TR", providers.OnDemand, 2.2, providers.Container),
			offer("2004", "H100", 1, "tr-country-1", "Istanbul, TR", providers.Spot, 1.1, providers.Container),
		},
		Absent: []providers.Offer{
			{InstanceType: "2003", ProviderRegion: "Texas, US", Capacity: providers.Spot}, // rents no bids
			{InstanceType: "2005", ProviderRegion: "Texas, US", Capacity: providers.OnDemand},
			{InstanceType: "2005", ProviderRegion: "Texas, US", Capacity: providers.Spot},
			{InstanceType: "2006", ProviderRegion: "Texas, US", Capacity: providers.OnDemand},
			{InstanceType: "2007", ProviderRegion: "Texas, US", Capacity: providers.OnDemand},
		},
		Spot:                 true,
		MissingID:            "99999999",
		BadKeyStatuses:       []int{http.StatusNotFound},
		InstanceTypeUnlisted: true,
		OneMachinePerOffer:   true,
	})
}
