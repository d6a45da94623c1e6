package bootstrap

import "testing"

// BenchmarkRenderDefault renders the default template for a machine with the
// labels and taints of a typical request: once per launch attempt.
func BenchmarkRenderDefault(b *testing.B) {
	labels := map[string]string{
		"tgp.solanyn.com/request": "train", "tgp.solanyn.com/provider": "runpod",
		"tgp.solanyn.com/region": "us-west", "tgp.solanyn.com/spot": "true", "team": "ml",
	}
	data := Data{
		NodeName: "gpur-0f8fad5bd9cb469f-1", RequestName: "train", RequestNamespace: "ml",
		Provider: "runpod", Region: "us-west", Labels: labels, KubeletLabels: KubeletLabels(labels),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(DefaultTemplate, data, Limits{MaxBytes: 64 << 10}); err != nil {
			b.Fatal(err)
		}
	}
}
