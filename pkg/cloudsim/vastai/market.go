package vastai

import (
	"math"
	"math/rand/v2"
)

// Host is one machine of the simulated marketplace, offered as one ask.
type Host struct {
	// ID is the ask (offer) id: the {id} of PUT /api/v0/asks/{id}/ and the
	// catalog entry's InstanceType.
	ID int `json:"id"`
	// MachineID is the physical machine (defaults to ID + 1,000,000,000).
	MachineID int `json:"machineId,omitempty"`
	// GPUName is Vast.ai's name of the GPU ("RTX 4090", "H100 SXM").
	GPUName string `json:"gpuName"`
	// NumGPUs is the GPUs the ask rents.
	NumGPUs int `json:"numGPUs"`
	// GPURAM is the memory of one GPU in MB (Vast.ai's unit).
	GPURAM int `json:"gpuRAM,omitempty"`
	// Geolocation is where the host is, as Vast.ai writes it ("Texas, US").
	Geolocation string `json:"geolocation"`
	// DPHTotal is the on-demand price, USD/h for the whole machine, storage
	// included (the simulator prices storage into it, whatever size is
	// asked for).
	DPHTotal float64 `json:"dphTotal"`
	// MinBid is the lowest interruptible bid the host takes, USD/h for the
	// whole machine; zero: the host rents no interruptible instances.
	MinBid float64 `json:"minBid,omitempty"`
	// Reliability is the host's 0-1 score.
	Reliability float64 `json:"reliability"`
	// Verified hosts passed Vast.ai's verification.
	Verified bool `json:"verified"`
	// VMsEnabled hosts can run VM instances ("vm": true).
	VMsEnabled bool `json:"vmsEnabled,omitempty"`
}

// Market generates a marketplace of hosts, for demos and benchmarks.
type Market struct {
	// Hosts is how many hosts to generate.
	Hosts int `json:"hosts"`
	// Seed makes the market reproducible.
	Seed uint64 `json:"seed,omitempty"`
	// FirstID is the first ask id (default 10,000,000).
	FirstID int `json:"firstId,omitempty"`
	// GPUs are the GPU models sold (default DefaultGPUs: 40 models, most of
	// which the operator maps, some it does not).
	GPUs []MarketGPU `json:"gpus,omitempty"`
	// Locations are the geolocations hosts are in (default
	// DefaultLocations: 60).
	Locations []string `json:"locations,omitempty"`
	// VMShare is the fraction of hosts with VMs enabled (default 0.3).
	VMShare float64 `json:"vmShare,omitempty"`
	// BidShare is the fraction of hosts that rent interruptible instances
	// (default 0.8).
	BidShare float64 `json:"bidShare,omitempty"`
	// UnverifiedShare is the fraction of unverified hosts (default 0.1).
	UnverifiedShare float64 `json:"unverifiedShare,omitempty"`
}

// MarketGPU is one GPU model of a generated market.
type MarketGPU struct {
	Name  string `json:"name"`
	RAMMB int    `json:"ramMB"`
	// PerGPU is the typical on-demand USD/h of one GPU.
	PerGPU float64 `json:"perGPU"`
}

// DefaultGPUs are the models of a generated market: 40 of them, with
// typical prices per GPU (illustrative, of the order Vast.ai's market
// shows; not quotes).
var DefaultGPUs = []MarketGPU{
	{"RTX 3090", 24576, 0.22}, {"RTX 4090", 24564, 0.35}, {"RTX 5090", 32607, 0.65}, {"RTX A4000", 16376, 0.15},
	{"RTX A5000", 24564, 0.25}, {"RTX A6000", 49140, 0.45}, {"A10", 23028, 0.30}, {"A40", 46068, 0.40},
	{"L4", 23034, 0.35}, {"L40", 46068, 0.80}, {"L40S", 46068, 0.85}, {"A100 PCIE", 40960, 0.80},
	{"A100 SXM4", 81920, 1.10}, {"A100 PCIE", 81920, 1.00}, {"H100 PCIE", 81559, 1.90}, {"H100 SXM", 81559, 2.20},
	{"H100 NVL", 95830, 2.30}, {"H200", 143771, 3.00}, {"H200 NVL", 143771, 2.90}, {"GH200 SXM", 97871, 2.50},
	{"B200", 183359, 4.50}, {"Tesla V100", 16384, 0.20}, {"Tesla V100", 32768, 0.28},
	{"RTX 3060", 12288, 0.07}, {"RTX 3070", 8192, 0.08}, {"RTX 3080", 10240, 0.12}, {"RTX 3080 Ti", 12288, 0.14},
	{"RTX 4060 Ti", 16380, 0.10}, {"RTX 4070 Ti", 12282, 0.15}, {"RTX 4080", 16376, 0.22}, {"RTX 2080 Ti", 11264, 0.10},
	{"GTX 1080 Ti", 11264, 0.06}, {"Titan RTX", 24576, 0.18}, {"Tesla T4", 15360, 0.12}, {"Tesla P100", 16384, 0.10},
	{"Tesla P40", 24576, 0.10}, {"Q RTX 8000", 49152, 0.35}, {"RTX 6000Ada", 49140, 0.75}, {"A800 PCIE", 81920, 0.95},
	{"RTX A2000", 6138, 0.06},
}

// DefaultLocations are the geolocations of a generated market: 60, in
// Vast.ai's "<subdivision>, <country code>" form.
var DefaultLocations = []string{
	"California, US", "Texas, US", "Virginia, US", "New York, US", "Washington, US", "Oregon, US", "Nevada, US",
	"Arizona, US", "Utah, US", "Colorado, US", "Illinois, US", "Ohio, US", "Michigan, US", "Georgia, US",
	"Florida, US", "North Carolina, US", "Pennsylvania, US", "New Jersey, US", "Kansas, US", "Missouri, US",
	"Minnesota, US", "Iowa, US", "Tennessee, US", "Alaska, US", "Quebec, CA", "Ontario, CA", "British Columbia, CA",
	"North Holland, NL", "Hesse, DE", "Bavaria, DE", "Ile-de-France, FR", "England, GB", "Leinster, IE",
	"Prague, CZ", "Masovia, PL", "Vienna, AT", "Zurich, CH", "Bucharest, RO", "Sofia, BG", "Stockholm, SE",
	"Uusimaa, FI", "Capital Region, IS", "Oslo, NO", "Lombardy, IT", "Madrid, ES", "Lisbon, PT", "Tokyo, JP",
	"Seoul, KR", "Taipei, TW", "Hong Kong, HK", "Singapore, SG", "New South Wales, AU", "Victoria, AU",
	"Maharashtra, IN", "Tel Aviv, IL", "Dubai, AE", "Sao Paulo, BR", "Gauteng, ZA", "Istanbul, TR", "Jalisco, MX",
}

// GenerateHosts makes m.Hosts hosts, the same ones for the same Market:
// models and locations uniformly, 1, 2, 4 or 8 GPUs (more hosts with fewer),
// an on-demand price of the model's per-GPU price times the count times
// 0.8-1.3, a minimum bid of 35-65% of it, reliability 0.9-1.0.
func GenerateHosts(m Market) []Host {
	gpus, locs := m.GPUs, m.Locations
	if len(gpus) == 0 {
		gpus = DefaultGPUs
	}
	if len(locs) == 0 {
		locs = DefaultLocations
	}
	first := m.FirstID
	if first <= 0 {
		first = 10_000_000
	}
	share := func(v, def float64) float64 {
		if v == 0 {
			return def
		}
		return v
	}
	vmShare, bidShare, unverified := share(m.VMShare, 0.3), share(m.BidShare, 0.8), share(m.UnverifiedShare, 0.1)
	rng := rand.New(rand.NewPCG(m.Seed, m.Seed^0x5bd1e995))
	counts := []int{1, 1, 1, 1, 2, 2, 4, 8}
	round := func(x float64) float64 { return math.Round(x*1e4) / 1e4 }
	out := make([]Host, m.Hosts)
	for i := range out {
		g := gpus[rng.IntN(len(gpus))]
		n := counts[rng.IntN(len(counts))]
		dph := round(g.PerGPU * float64(n) * (0.8 + 0.5*rng.Float64()))
		h := Host{
			ID: first + i, GPUName: g.Name, NumGPUs: n, GPURAM: g.RAMMB, Geolocation: locs[rng.IntN(len(locs))],
			DPHTotal: max(dph, 0.001), Reliability: math.Round((0.9+0.1*rng.Float64())*1e4) / 1e4,
			Verified: rng.Float64() >= unverified, VMsEnabled: rng.Float64() < vmShare,
		}
		if rng.Float64() < bidShare {
			h.MinBid = max(round(dph*(0.35+0.3*rng.Float64())), 0.001)
		}
		out[i] = h
	}
	return out
}
