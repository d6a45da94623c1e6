package paperspace_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

func TestParseMachineType(t *testing.T) {
	cases := []struct {
		label string
		gpu   string
		count int
		ok    bool
	}{
		{"A100-80G", "A100-80GB", 1, true},
		{"A100-80Gx8", "A100-80GB", 8, true},
		{"A100", "A100", 1, true},
		{"A100x4", "A100", 4, true},
		{"H100x8", "H100", 8, true},
		{"A6000x2", "A6000", 2, true},
		{"A5000x4", "A5000", 4, true},
		{"A4000", "A4000", 1, true},
		{"V100-32Gx4", "V100-32GB", 4, true},
		{"V100", "V100", 1, true},
		{"P4000", "P4000", 1, true},
		{"RTX4000", "", 0, false},
		{"C5", "", 0, false},
		{"A100-80Gx0", "", 0, false},
		{"A100-80Gx08", "", 0, false},
		{"A100-80Gx", "", 0, false},
		{"A100-80Gx-1", "", 0, false},
		{"x8", "", 0, false},
		{"", "", 0, false},
	}
	for _, tc := range cases {
		gpu, count, ok := paperspace.ParseMachineType(tc.label)
		if gpu != tc.gpu || count != tc.count || ok != tc.ok {
			t.Errorf("ParseMachineType(%q) = %q, %d, %v; want %q, %d, %v", tc.label, gpu, count, ok, tc.gpu, tc.count, tc.ok)
		}
	}
}

func TestTablesUseCanonicalNames(t *testing.T) {
	for model, gpu := range paperspace.GPUModels {
		if !slices.Contains(providers.CanonicalGPUTypes, gpu) {
			t.Errorf("model %s maps to %s, not a canonical GPU type", model, gpu)
		}
	}
	want := map[string]string{"ny2": "us-east-1", "ca1": "us-west-1", "ams1": "eu-west-1"}
	if !maps.Equal(paperspace.Regions, want) {
		t.Errorf("Regions = %v, want %v", paperspace.Regions, want)
	}
}

func TestDefaultPriceTable(t *testing.T) {
	want := map[string]float64{
		"A100-80G": 3.18, "A100-80Gx2": 6.36, "A100-80Gx4": 12.72, "A100-80Gx8": 25.44,
		"H100": 5.95, "H100x8": 47.60,
		"A6000": 1.89, "A6000x2": 3.78, "A6000x4": 7.56,
		"A5000": 1.38, "A5000x2": 2.76, "A5000x4": 5.52,
		"A4000": 0.76, "A4000x2": 1.52, "A4000x4": 3.04,
		"V100-32G": 2.30, "V100-32Gx2": 4.60, "V100-32Gx4": 9.20,
		"P4000": 0.51, "RTX4000": 0.56,
	}
	p := paperspace.DefaultPriceTable()
	if got := p.MachineTypes(); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("machine types %v", got)
	}
	for mt, usd := range want {
		if got, ok := p.Price(mt); !ok || got != usd {
			t.Errorf("price of %s = %v, %v; want %v", mt, got, ok, usd)
		}
	}
	if !strings.Contains(p.Source, "https://www.paperspace.com/pricing") ||
		!strings.Contains(p.Source, "docs.digitalocean.com/products/paperspace/machines/details/pricing") || p.Date != "2026-11-26" {
		t.Errorf("source %q date %q", p.Source, p.Date)
	}
	if p.SourceOf("H100") != p.Source {
		t.Errorf("H100 source %q, want the table's", p.SourceOf("H100"))
	}
}

func TestParsePriceTableRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":       `{`,
		"no source":      `{"date":"2026-11-26","prices":{"H100":1}}`,
		"no prices":      `{"source":"s","prices":{}}`,
		"zero price":     `{"source":"s","prices":{"H100":0}}`,
		"negative price": `{"source":"s","prices":{"H100":-1}}`,
		"empty type":     `{"source":"s","prices":{"":1}}`,
		"unknown field":  `{"source":"s","prices":{"H100":1},"currency":"EUR"}`,
	} {
		if _, err := paperspace.ParsePriceTable([]byte(doc)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	p, err := paperspace.ParsePriceTable([]byte(`{"source":"mine","date":"2026-01-01","prices":{"H100":4.5}}`))
	if err != nil {
		t.Fatal(err)
	}
	if usd, ok := p.Price("H100"); !ok || usd != 4.5 || p.Source != "mine" {
		t.Errorf("parsed %+v", p)
	}
}

func TestPriceOverrides(t *testing.T) {
	base := paperspace.DefaultPriceTable()
	p := base.WithOverrides(map[string]float64{"H100": 5, "A4000": 0, "B200x8": 50})
	if usd, _ := p.Price("H100"); usd != 5 || p.SourceOf("H100") != "overrides" {
		t.Errorf("H100 = %v from %q", usd, p.SourceOf("H100"))
	}
	if _, ok := p.Price("A4000"); ok {
		t.Error("A4000 overridden with 0 is still priced")
	}
	if usd, _ := p.Price("B200x8"); usd != 50 {
		t.Errorf("added B200x8 = %v", usd)
	}
	if usd, _ := base.Price("H100"); usd != 5.95 {
		t.Errorf("the base table changed: H100 = %v", usd)
	}
	if _, ok := base.Price("A4000"); !ok {
		t.Error("the base table lost A4000")
	}
	for _, bad := range []string{"abc", "-1", "NaN", "+Inf", ""} {
		_, err := base.WithConfigMapData("ns", "cm", map[string]string{"H100": bad})
		if err == nil || !strings.Contains(err.Error(), `"H100"`) || !strings.Contains(err.Error(), "configmap:ns/cm") {
			t.Errorf("value %q: error %v, want one naming the key and the ConfigMap", bad, err)
		}
	}
}

func TestNormalizeOffersDropsUnusable(t *testing.T) {
	offers := paperspace.NormalizeOffers(paperspace.DefaultPriceTable(), []paperspace.Availability{
		{MachineType: "A6000x4", Region: "ams1", Available: true},
		{MachineType: "RTX4000", Region: "ny2", Available: true}, // no canonical GPU
		{MachineType: "A100x8", Region: "ny2", Available: true},  // not priced
		{MachineType: "H100", Region: "lon1", Available: true},   // unknown region
	})
	want := providers.Offer{Provider: "paperspace", InstanceType: "A6000x4", GPUType: "A6000", GPUCount: 4, Region: "eu-west-1",
		ProviderRegion: "ams1", Capacity: providers.OnDemand, HourlyPrice: 7.56, Available: true, PriceSource: providers.PriceSourceStatic}
	if len(offers) != 1 || offers[0] != want {
		t.Fatalf("offers %+v, want only %+v", offers, want)
	}
}

func BenchmarkNormalizeOffers10k(b *testing.B) {
	prices := paperspace.DefaultPriceTable()
	types := append(prices.MachineTypes(), "C5", "A100x8") // some without GPU or price
	regions := []string{"ny2", "ca1", "ams1", "lon1"}
	avail := make([]paperspace.Availability, 10000)
	for i := range avail {
		avail[i] = paperspace.Availability{MachineType: types[i%len(types)], Region: regions[i/len(types)%len(regions)], Available: i%3 != 0}
	}
	var n int
	b.ReportAllocs()
	for b.Loop() {
		n = len(paperspace.NormalizeOffers(prices, avail))
	}
	b.ReportMetric(float64(n), "offers/op")
	if n == 0 {
		b.Fatalf("no offers from %d answers", len(avail))
	}
}
