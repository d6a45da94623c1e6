package vastai_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaiapi"
)

var vastaiTypes = map[string]vastaiapi.SearchOffersJSONBodyType{"ondemand": "ondemand", "bid": "bid"}

// market50k is a generated marketplace of 50,000 hosts (40 GPU models, 60
// locations, 80% renting bids, 30% with VMs).
var market50k = vastaisim.Market{Hosts: 50_000, Seed: 1}

// benchAdapter is an adapter on a simulator of market50k with the search's
// filters lifted, so that every host the operator maps is offered.
func benchAdapter(b *testing.B) (*stack.Stack, *vastai.Adapter) {
	b.Helper()
	st, err := stack.Start(stack.Config{VastAI: &vastaisim.Config{Config: cloudsim.Config{APIKey: "k"}, Market: &market50k}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	ps, err := st.Adapters(stack.AdapterOptions{Unlimited: true, VastAI: func(c *vastai.Config) {
		c.Filters = vastai.Filters{AllowUnverified: true, MinReliability: -1}
		c.SearchLimit = 100_000
	}})
	if err != nil {
		b.Fatal(err)
	}
	return st, ps[0].(*vastai.Adapter)
}

// BenchmarkOffers50k is a whole catalog refresh of a 50,000-host market
// over loopback HTTP: the adapter's two searches (the simulator's search
// and encoding included) and their normalization.
func BenchmarkOffers50k(b *testing.B) {
	_, a := benchAdapter(b)
	ctx := context.Background()
	n := 0
	for b.Loop() {
		offers, err := a.Offers(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n = len(offers)
	}
	b.ReportMetric(float64(n), "offers")
	b.ReportMetric(2, "calls/refresh")
}

// BenchmarkNormalizeOffers50k is the adapter's share of a refresh: decoding
// and normalizing the two search answers of a 50,000-host market.
func BenchmarkNormalizeOffers50k(b *testing.B) {
	st, a := benchAdapter(b)
	var bodies [2][]byte
	for i, typ := range []string{"ondemand", "bid"} {
		raw, _ := json.Marshal(a.SearchBody(vastaiTypes[typ]))
		req, _ := http.NewRequest(http.MethodPost, st.URL("vastai")+"/api/v0/bundles/", bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		bodies[i] = buf.Bytes()
	}
	b.SetBytes(int64(len(bodies[0]) + len(bodies[1])))
	n := 0
	for b.Loop() {
		offers, err := vastai.NormalizeOffers(bodies[0], bodies[1], vastai.Filters{AllowUnverified: true, MinReliability: -1})
		if err != nil {
			b.Fatal(err)
		}
		n = len(offers)
	}
	b.ReportMetric(float64(n), "offers")
}
