package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

var gpuRequestGVR = schema.GroupVersionResource{Group: "tgp.solanyn.com", Version: "v1", Resource: "gpurequests"}

// randomSpec is one generated GPURequest spec with what the generator
// expects of it: valid, or invalid and why.
type randomSpec struct {
	spec    map[string]any
	invalid []string // reasons; empty: valid
}

// genSpec draws a spec from rng: valid and invalid gpuTypes, counts,
// prices (zero, negative, strings), region and regionPreference
// combinations (duplicates, both, bad patterns), policies, providers,
// maxSpotPrice without spotInstance, container requests (some with an empty
// or malformed image, or with idleTimeout, which needs a Node) and unknown
// fields.
func genSpec(rng *rand.Rand) randomSpec {
	var r randomSpec
	bad := func(why string) { r.invalid = append(r.invalid, why) }
	spec := map[string]any{}
	r.spec = spec
	pick := func(xs ...any) any { return xs[rng.IntN(len(xs))] }

	gpuTypes := []string{"A6000", "RTX4090", "A4000", "A6000", "RTX4090", "A4000", "H100", "A100", "B200", "TPUv5", "rtx4090", "NOT-A-GPU", "", strings.Repeat("X", 40)}
	gt := gpuTypes[rng.IntN(len(gpuTypes))]
	spec["gpuType"] = gt
	if gt == "" || len(gt) > 32 {
		bad("gpuType length")
	}
	if rng.Float64() < 0.5 {
		n := rng.IntN(22) - 1 // -1..20
		spec["gpuCount"] = n
		if n < 1 || n > 16 {
			bad("gpuCount range")
		}
	}
	spot := false
	switch rng.IntN(10) {
	case 0, 1, 2:
		spec["spotInstance"], spot = true, true
	case 3:
		spec["spotInstance"] = false
	}
	var maxPrice, maxSpot float64
	hasMax, hasSpot := false, false
	if rng.Float64() < 0.4 {
		switch v := pick(0.0, -1.0, 0.5, 2.5, 10.0, 100.0, "1.5", "cheap").(type) {
		case float64:
			spec["maxPrice"] = v
			if v <= 0 {
				bad("maxPrice not positive")
			} else {
				maxPrice, hasMax = v, true
			}
		case string:
			spec["maxPrice"] = v
			bad("maxPrice is a string")
		}
	}
	if rng.Float64() < 0.25 {
		switch v := pick(0.0, -0.5, 0.3, 1.0, 5.0, "0.3").(type) {
		case float64:
			spec["maxSpotPrice"] = v
			if v <= 0 {
				bad("maxSpotPrice not positive")
			} else {
				maxSpot, hasSpot = v, true
			}
		case string:
			spec["maxSpotPrice"] = v
			bad("maxSpotPrice is a string")
		}
		if !spot {
			bad("maxSpotPrice without spotInstance")
		}
		if hasSpot && hasMax && maxSpot > maxPrice {
			bad("maxSpotPrice > maxPrice")
		}
	}
	regionPool := []string{"us-east-1", "us-west", "eu-west-1", "us-east", "ap-south-1"}
	prefs := func() []any {
		n := 1 + rng.IntN(4)
		out := make([]any, n)
		seen := map[string]bool{}
		dup := false
		for i := range out {
			s := regionPool[rng.IntN(len(regionPool))]
			dup = dup || seen[s]
			seen[s] = true
			out[i] = s
		}
		if dup {
			bad("duplicate regions")
		}
		return out
	}
	switch rng.IntN(7) {
	case 1:
		spec["region"] = pick("us-east", "us-east-1", "us-west-1", "eu-west")
	case 2:
		spec["region"] = pick("US East", "us_east", "-us")
		bad("region pattern")
	case 3, 4:
		spec["regionPreference"] = prefs()
	case 5:
		spec["region"] = "us-east"
		spec["regionPreference"] = prefs()
		bad("region and regionPreference")
	case 6:
		spec["regionPreference"] = []any{}
		bad("empty regionPreference")
	}
	if rng.Float64() < 0.2 {
		p := pick("Ordered", "LowestPrice", "Cheapest").(string)
		spec["regionPolicy"] = p
		if p == "Cheapest" {
			bad("regionPolicy enum")
		}
	}
	if rng.Float64() < 0.2 {
		p := pick("lambdalabs", "runpod", "paperspace", "aws").(string)
		spec["provider"] = p
		if p == "aws" {
			bad("provider enum")
		}
	}
	if rng.Float64() < 0.15 {
		// A container request: served only by container offers (RunPod).
		c := map[string]any{"image": "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04"}
		switch rng.IntN(6) {
		case 0:
			c["image"] = ""
			bad("container image empty")
		case 1:
			c["image"] = "has space:latest"
			bad("container image with whitespace")
		case 2:
			spec["idleTimeout"] = "30m"
			bad("idleTimeout with a container")
		case 3:
			c["ports"] = []any{map[string]any{"port": 8888, "protocol": "http"}, map[string]any{"port": 22}}
			c["args"] = []any{"sleep", "infinity"}
		case 4:
			c["env"] = []any{map[string]any{"name": "A", "value": "b"}}
		}
		spec["container"] = c
	}
	if rng.Float64() < 0.1 {
		spec[pick("gpuMemory", "maxprice", "zone").(string)] = "x"
		bad("unknown field")
	}
	return r
}

// TestRandomRequests writes 1,000 random GPURequests, valid and invalid,
// with strict field validation against a running operator: every invalid
// one is refused naming a spec field, every valid one is processed (its
// status observes its generation and it is Ready, or Pending with a
// message), and the operator neither panics nor restarts.
func TestRandomRequests(t *testing.T) {
	const total = 1000
	bin := operatorBin(t)
	ctx := t.Context()
	c, err := startCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	s := startSims(simConfigs(benchCatalog(), simKeys, cloudsim.Faults{}, 1))
	defer s.close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	startNodeRegistrar(actx, c, s, 16)
	args := append(append(c.operatorArgs(), "--leader-elect=false",
		"--poll-interval", "1s", "-v", "2", "--kube-api-qps", fmt.Sprint(kubeQPS), "--kube-api-burst", fmt.Sprint(kubeBurst)), s.operatorArgs()...)
	op, err := startOperator(bin, args, keyEnv(simKeys))
	if err != nil {
		t.Fatal(err)
	}
	defer op.stop(5 * time.Second)
	if err := op.waitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	pid := op.pid()
	w, err := watchRequests(actx, c.client)
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(uint64(testSeed(t)), 1))
	specs := make([]randomSpec, total)
	for i := range specs {
		specs[i] = genSpec(rng)
	}
	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		problems []string
		refused  atomic.Int64
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	res := c.dyn.Resource(gpuRequestGVR).Namespace(requestNamespace)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				name := fmt.Sprintf("rnd-%04d", i)
				obj := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "tgp.solanyn.com/v1", "kind": "GPURequest",
					"metadata": map[string]any{"name": name, "namespace": requestNamespace},
					"spec":     specs[i].spec,
				}}
				_, err := res.Create(ctx, obj, metav1.CreateOptions{FieldValidation: "Strict"})
				switch {
				case err == nil && len(specs[i].invalid) > 0:
					report("%s accepted, but invalid (%s): %v", name, strings.Join(specs[i].invalid, ", "), specs[i].spec)
					mu.Lock()
					accepted[name] = true
					mu.Unlock()
				case err == nil:
					mu.Lock()
					accepted[name] = true
					mu.Unlock()
				case len(specs[i].invalid) == 0:
					report("%s refused, but valid: %v: %v", name, specs[i].spec, err)
				default:
					refused.Add(1)
					if !strings.Contains(err.Error(), "spec.") {
						report("%s refused (%s) without naming a spec field: %v", name, strings.Join(specs[i].invalid, ", "), err)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d accepted, %d refused", len(accepted), refused.Load())

	// Every accepted request is processed.
	var unprocessed []string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		unprocessed = unprocessed[:0]
		seen := 0
		for _, r := range w.all() {
			if !accepted[r.Name] {
				continue
			}
			seen++
			st := r.Status
			done := st.ObservedGeneration == r.Generation &&
				(st.Phase == tgpv1.PhaseReady || (st.Phase == tgpv1.PhasePending && st.Message != ""))
			if !done {
				unprocessed = append(unprocessed, fmt.Sprintf("%s (phase %q, observed %d/%d, message %q, spec %+v)",
					r.Name, st.Phase, st.ObservedGeneration, r.Generation, st.Message, r.Spec))
			}
		}
		return seen == len(accepted) && len(unprocessed) == 0, nil
	})
	if err != nil {
		report("%d accepted requests not processed: %s", len(unprocessed), strings.Join(unprocessed[:min(10, len(unprocessed))], "; "))
		// The operator's log about the first few, as evidence.
		logs := op.logs.String()
		for _, u := range unprocessed[:min(3, len(unprocessed))] {
			name := u[:strings.IndexByte(u, ' ')]
			var lines []string
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, name) {
					lines = append(lines, l)
				}
			}
			t.Logf("operator log lines about %s:\n%s", name, strings.Join(lines, "\n"))
		}
	}
	phases := phaseCounts(w.all())
	t.Logf("phases of accepted requests: %s", formatPhases(phases))

	if !op.running() || op.pid() != pid {
		report("operator exited: %v", op.waitErr)
	}
	if out := op.logs.String(); containsPanic(out) {
		report("operator panicked:\n%s", tail(out, 40))
	}
	for _, p := range problems[:min(30, len(problems))] {
		t.Error(p)
	}
	if len(problems) > 30 {
		t.Errorf("... and %d more", len(problems)-30)
	}
}
