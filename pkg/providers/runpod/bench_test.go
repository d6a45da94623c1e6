package runpod_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// catalog10k is a /v2/catalog/gpus answer with 10,000 GPU type entries, each
// in three data centers, cycling over mapped and unmapped type ids.
func catalog10k(b *testing.B) []byte {
	b.Helper()
	ids := make([]string, 0, len(runpod.GPUTypes)+1)
	for id := range runpod.GPUTypes {
		ids = append(ids, id)
	}
	ids = append(ids, "NVIDIA GeForce RTX 3070") // unmapped: skipped
	dcs := []string{"US-KS-2", "EU-RO-1", "CA-MTL-1", "US-TX-3", "XX-YY-1"}
	levels := []runpodv2.AvailabilityLevel{runpodv2.HIGH, runpodv2.MEDIUM, runpodv2.LOW, runpodv2.NONE}
	resp := runpodv2.ListGpuTypesResponse{Gpus: make([]runpodv2.GpuType, 10000)}
	for i := range resp.Gpus {
		g := &resp.Gpus[i]
		g.Id = ids[i%len(ids)]
		g.Name = fmt.Sprintf("type %d", i)
		g.Secure = true
		g.Price.Secure = 0.1 + float64(i%300)/100
		g.MaxCount.Secure = 8
		g.Availability = new(runpodv2.HIGH)
		g.DataCenters = &[]runpodv2.DataCenterAvailability{}
		for j := range 3 {
			dc := dcs[(i+j)%len(dcs)]
			*g.DataCenters = append(*g.DataCenters, runpodv2.DataCenterAvailability{Id: dc, Name: dc, Availability: levels[(i+j)%len(levels)]})
		}
	}
	body, err := json.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkNormalizeOffers10k decodes and normalizes a 10,000-entry catalog
// (every count 1..8 of each type: about 170,000 offers).
func BenchmarkNormalizeOffers10k(b *testing.B) {
	body := catalog10k(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		offers, err := runpod.NormalizeOffers(body, runpod.SecureCloud)
		if err != nil || len(offers) == 0 {
			b.Fatalf("%d offers, %v", len(offers), err)
		}
	}
}
