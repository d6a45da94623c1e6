package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/credentials"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/operator"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// simKey is the one API key the simulators accept. It is distinctive so a
// test can tell it never reaches the output.
const simKey = "sim-key-5c1f7e0b9a2d"

// h100Sims runs the three simulators with H100 offers across providers,
// regions, machine kinds and GPU counts. For H100 x1, spot, maxPrice 3 in
// [us-west-1, us-east-1] (Ordered) no provider sells spot (RunPod withdrew
// it; its SpotPrice entries below are ignored), so the on-demand fallbacks
// under 3 rank by region: Lambda us-west-1 at 2.49, then Lambda us-east-1 at
// the same price (Lambda prices a type the same in every region), so region
// order, not price, decides. RunPod's pods are containers and lose to a VM
// request as WrongMachineKind, though the us-east-1 one (2.39) is cheaper.
// Paperspace's shipped H100 price (5.95) is over the cap, eu-west-1 is not a
// listed region, and the other machines (RunPod pods of 2 to 8 GPUs,
// Lambda's and Paperspace's 8x types) have the wrong count.
func h100Sims(t *testing.T) *stack.Stack {
	t.Helper()
	cfg := func(entries ...cloudsim.CatalogEntry) *cloudsim.Config {
		return &cloudsim.Config{APIKey: simKey, Catalog: entries}
	}
	st, err := stack.Start(stack.Config{
		Lambda: cfg(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-east-1", OnDemandPrice: 2.49, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_8x_h100_sxm5", GPUs: 8, Region: "us-west-1", OnDemandPrice: 23.92, Capacity: -1},
		),
		RunPod: cfg(
			cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 80GB HBM3", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 2.99, SpotPrice: 2.50, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 PCIe", GPUs: 8, Region: "US-DE-1", OnDemandPrice: 2.39, SpotPrice: 1.90, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 NVL", GPUs: 8, Region: "EU-NL-1", OnDemandPrice: 2.79, SpotPrice: 2.20, Capacity: -1},
		),
		Paperspace: cfg(
			cloudsim.CatalogEntry{InstanceType: "H100", GPUs: 1, Region: "ny2", Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "H100", GPUs: 1, Region: "ca1", Capacity: -1},
		),
	}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// endpointArgs point the subcommands at the simulators, with the API keys
// in a credentials file (key "" leaves the file out).
func endpointArgs(t *testing.T, st *stack.Stack, key string) []string {
	t.Helper()
	// Keys from the environment of whoever runs the tests must not leak in.
	for _, p := range credentials.Providers {
		t.Setenv(credentials.EnvVar(p), "")
	}
	args := []string{
		// The stacks here have no Vast.ai simulator.
		"--providers", "lambdalabs,runpod,paperspace",
		"--lambda-url", st.URL(providers.LambdaLabs),
		"--lambda-ssh-key-name", lambdasim.DefaultSSHKeyName,
		"--runpod-api-url", st.URL(providers.RunPod),
		"--paperspace-url", st.URL(providers.Paperspace) + "/v1",
		// Paperspace's catalog is one availability call per machine type
		// and region: lift the client limits the real APIs need.
		"--lambda-rps", "1000", "--runpod-rps", "1000", "--paperspace-rps", "1000",
		"--provider-call-timeout", "10s",
		"--timeout", "30s",
	}
	if key != "" {
		path := filepath.Join(t.TempDir(), "credentials.env")
		content := fmt.Sprintf("# test keys\nLAMBDA_API_KEY=%s\nexport RUNPOD_API_KEY=%q\npaperspace = '%s'\n", key, key, key)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--credentials-file", path)
	}
	return args
}

// regionAwareArgs are the flags of the contract's region-aware-job.
var regionAwareArgs = []string{"--gpu", "H100", "--count", "1", "--spot", "--max-price", "3", "--regions", "us-west-1,us-east-1"}

type cmdResult struct {
	code        int
	out, errOut string
}

func runCmd(cmd func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) cmdResult {
	var out, errOut bytes.Buffer
	code := cmd(args, &out, &errOut)
	return cmdResult{code, out.String(), errOut.String()}
}

func offersCmd(args []string, out, errOut *bytes.Buffer) int { return offersCommand(args, out, errOut) }
func validateCmd(args []string, out, errOut *bytes.Buffer) int {
	return validateCredentialsCommand(args, out, errOut)
}

func decodeOffers(t *testing.T, s string) offersJSON {
	t.Helper()
	var doc offersJSON
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decoding the JSON output: %v\n%s", err, s)
	}
	return doc
}

// TestOffersMatchesController checks that the CLI's chosen offer is the one
// a real controller launches for a GPURequest with the same constraints.
func TestOffersMatchesController(t *testing.T) {
	st := h100Sims(t)
	args := append(slices.Clone(regionAwareArgs), endpointArgs(t, st, simKey)...)

	// Through the public entry point, as main calls it.
	var table bytes.Buffer
	if code := runOffers(args, &table); code != exitOK {
		t.Fatalf("offers exited %d, want 0:\n%s", code, table.String())
	}
	t.Logf("gpu-operator offers %s\n%s", strings.Join(regionAwareArgs, " "), table.String())
	res := runCmd(offersCmd, append(args, "-o", "json")...)
	if res.code != exitOK {
		t.Fatalf("offers -o json exited %d, want 0; stderr:\n%s", res.code, res.errOut)
	}
	doc := decodeOffers(t, res.out)
	if doc.Chosen == nil || len(doc.Ranked) == 0 || *doc.Chosen != doc.Ranked[0] {
		t.Fatalf("chosen %+v is not the first ranked offer of %+v", doc.Chosen, doc.Ranked)
	}
	chosen := *doc.Chosen
	// The first row of the table is the chosen offer, and marked.
	lines := strings.Split(table.String(), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "RANK") {
		t.Fatalf("table has no header:\n%s", table.String())
	}
	wantRow := []string{"1", chosen.Provider}
	wantRow = append(wantRow, strings.Fields(chosen.InstanceType)...)
	wantRow = append(wantRow, "1", chosen.Region, chosen.ProviderRegion, string(chosen.Capacity), formatPrice(chosen.HourlyPrice),
		string(chosen.PriceSource), "<-", "CHOSEN")
	if got := strings.Fields(lines[1]); !slices.Equal(got, wantRow) {
		t.Errorf("first row %q, want the chosen offer %q", lines[1], strings.Join(wantRow, " "))
	}
	if n := strings.Count(table.String(), "CHOSEN"); n != 1 {
		t.Errorf("%d rows marked CHOSEN, want 1:\n%s", n, table.String())
	}

	// The controller, against the same simulators, for the same constraints.
	env := testenv.StartT(t)
	ns, client := startController(t, env, st)
	maxPrice := 3.0
	_, err := client.TgpV1().GPURequests(ns).Create(t.Context(), &tgpv1.GPURequest{
		ObjectMeta: metav1.ObjectMeta{Name: "region-aware-job", Namespace: ns},
		Spec: tgpv1.GPURequestSpec{GPUType: "H100", GPUCount: 1, SpotInstance: true, MaxPrice: &maxPrice,
			RegionPreference: []string{"us-west-1", "us-east-1"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got tgpv1.GPURequestStatus
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		req, err := client.TgpV1().GPURequests(ns).Get(ctx, "region-aware-job", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = req.Status
		return got.Provider != "" && got.InstanceType != "" && got.ProviderRegion != "", nil
	})
	if err != nil {
		t.Fatalf("the controller chose no offer within 30s; last status %+v", got)
	}
	if got.Provider != chosen.Provider || got.InstanceType != chosen.InstanceType || got.ProviderRegion != chosen.ProviderRegion ||
		got.Region != chosen.Region || got.Spot != (chosen.Capacity == providers.Spot) ||
		got.HourlyPrice == nil || *got.HourlyPrice != chosen.HourlyPrice {
		t.Errorf("controller chose %s/%s/%s (%s) spot=%v $%v; the CLI chose %s", got.Provider, got.InstanceType, got.ProviderRegion,
			got.Region, got.Spot, price(got.HourlyPrice), chosen.ID())
	}
	// The fixture is built so the choice is not merely the cheapest offer
	// (RunPod's cheaper container and Lambda's equal us-east-1 price lose).
	if chosen.ID() != "lambdalabs/gpu_1x_h100_pcie/us-west-1/on-demand" {
		t.Errorf("CLI chose %s, want lambdalabs/gpu_1x_h100_pcie/us-west-1/on-demand (a VM in the first region)", chosen.ID())
	}
}

func price(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}

// startController runs a controller, wired by pkg/operator as the operator
// binary wires it, on the simulators' adapters and a fresh namespace of env;
// it stops with the test.
func startController(t *testing.T, env *testenv.Env, st *stack.Stack) (string, versioned.Interface) {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(env.Config)
	client := versioned.NewForConfigOrDie(env.Config)
	ns := fmt.Sprintf("t-%08x", rand.Uint32())
	if _, err := kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	adapters, err := st.Adapters(stack.AdapterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	recorder, stopEvents := operator.NewRecorder(ctx, kube.CoreV1(), "gpu-operator-test")
	ctrl, informers, err := operator.NewController(operator.Options{
		Config:     controller.Config{PollInterval: 300 * time.Millisecond},
		KubeClient: kube,
		Client:     client,
		Namespace:  ns,
		Providers:  adapters,
		Recorder:   recorder,
		Registry:   prometheus.NewRegistry(),
	})
	if err != nil {
		cancel()
		stopEvents()
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := operator.Run(ctx, ctrl, informers, 2, nil); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
		stopEvents()
	})
	return ns, client
}

func TestOffersJSONAndReasons(t *testing.T) {
	st := h100Sims(t)
	endpoints := endpointArgs(t, st, simKey)

	t.Run("json document", func(t *testing.T) {
		res := runCmd(offersCmd, append(append(slices.Clone(regionAwareArgs), endpoints...), "-o", "json")...)
		if res.code != exitOK {
			t.Fatalf("exit %d, want 0; stderr:\n%s", res.code, res.errOut)
		}
		// The top-level keys are the document's stable contract.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(res.out), &raw); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range raw {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		wantKeys := []string{"catalogs", "chosen", "considered", "counts", "ranked", "rejected", "request", "summary"}
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("top-level keys %v, want %v", keys, wantKeys)
		}
		doc := decodeOffers(t, res.out)
		wantReq := requestJSON{GPUType: "H100", GPUCount: 1, Regions: []string{"us-west-1", "us-east-1"}, RegionPolicy: "Ordered", Spot: true, MaxPrice: 3}
		if fmt.Sprint(doc.Request) != fmt.Sprint(wantReq) {
			t.Errorf("request %+v, want %+v", doc.Request, wantReq)
		}
		var ranked []string
		for _, o := range doc.Ranked {
			ranked = append(ranked, o.ID())
		}
		wantRanked := []string{
			"lambdalabs/gpu_1x_h100_pcie/us-west-1/on-demand",
			"lambdalabs/gpu_1x_h100_pcie/us-east-1/on-demand",
		}
		if !slices.Equal(ranked, wantRanked) {
			t.Errorf("ranked\n  %s\nwant\n  %s", strings.Join(ranked, "\n  "), strings.Join(wantRanked, "\n  "))
		}
		reasons := map[string]selector.Reason{}
		for _, r := range doc.Rejected {
			if r.Detail == "" {
				t.Errorf("rejection of %s has no detail", r.Offer.ID())
			}
			if r.Offer.GPUCount == 1 {
				reasons[r.Offer.ID()] = r.Reason
			}
		}
		for id, want := range map[string]selector.Reason{
			"paperspace/H100/ny2/on-demand":                  selector.OverOnDemandCap,
			"paperspace/H100/ca1/on-demand":                  selector.OverOnDemandCap,
			"paperspace/H100/ams1/on-demand":                 selector.RegionNotPreferred,
			"runpod/NVIDIA H100 80GB HBM3/US-CA-2/on-demand": selector.WrongMachineKind,
			"runpod/NVIDIA H100 PCIe/US-DE-1/on-demand":      selector.WrongMachineKind,
			"runpod/NVIDIA H100 NVL/EU-NL-1/on-demand":       selector.WrongMachineKind,
		} {
			if reasons[id] != want {
				t.Errorf("%s lost for %q, want %q", id, reasons[id], want)
			}
		}
		if doc.Counts[selector.WrongGPUCount] == 0 || doc.Counts[selector.OverOnDemandCap] != 2 || doc.Counts[selector.RegionNotPreferred] != 1 ||
			doc.Counts[selector.WrongMachineKind] != 3 {
			t.Errorf("counts %v, want WrongGPUCount > 0, 2 OverOnDemandCap, 1 RegionNotPreferred and 3 WrongMachineKind", doc.Counts)
		}
		total := len(doc.Ranked)
		for _, n := range doc.Counts {
			total += n
		}
		if doc.Considered == 0 || total != doc.Considered {
			t.Errorf("considered %d, but %d ranked plus counted losers", doc.Considered, total)
		}
		if len(doc.Catalogs) != 3 {
			t.Errorf("catalogs %+v, want one per provider", doc.Catalogs)
		}
		for _, c := range doc.Catalogs {
			if c.Error != "" || c.Offers == 0 {
				t.Errorf("catalog %+v, want offers and no error", c)
			}
		}
		if !strings.HasPrefix(doc.Summary, "chose lambdalabs/gpu_1x_h100_pcie/us-west-1 on-demand at $2.49/h") {
			t.Errorf("summary %q", doc.Summary)
		}
	})

	t.Run("verbose table lists losers with reasons", func(t *testing.T) {
		res := runCmd(offersCmd, append(append(slices.Clone(regionAwareArgs), endpoints...), "-v")...)
		if res.code != exitOK {
			t.Fatalf("exit %d, want 0; stderr:\n%s", res.code, res.errOut)
		}
		// The rows of Paperspace's single-H100 machine in the listed regions.
		var paperspace []string
		for _, line := range strings.Split(res.out, "\n") {
			if f := strings.Fields(line); len(f) > 6 && f[1] == providers.Paperspace && f[2] == "H100" && f[5] != "ams1" {
				paperspace = append(paperspace, line)
			}
		}
		if len(paperspace) != 2 {
			t.Fatalf("%d paperspace H100 rows in us-west-1 and us-east-1, want 2 losers:\n%s", len(paperspace), res.out)
		}
		for _, line := range paperspace {
			// Shipped table price 5.95 > maxPrice 3.
			if !strings.Contains(line, "OverOnDemandCap") || !strings.Contains(line, "5.95") || !strings.Contains(line, "static") {
				t.Errorf("paperspace row %q, want OverOnDemandCap at the static 5.95", line)
			}
		}
		for _, want := range []string{"NOT ELIGIBLE", "REASON", "DETAIL", "RegionNotPreferred", "WrongGPUCount", "WrongMachineKind", "chose lambdalabs/"} {
			if !strings.Contains(res.out, want) {
				t.Errorf("verbose output lacks %q:\n%s", want, res.out)
			}
		}
		// Without -v the losers are only counted.
		quiet := runCmd(offersCmd, append(slices.Clone(regionAwareArgs), endpoints...)...)
		if strings.Contains(quiet.out, "NOT ELIGIBLE") || !strings.Contains(quiet.out, "-v lists the") {
			t.Errorf("output without -v:\n%s", quiet.out)
		}
	})

	t.Run("no eligible offer exits 1", func(t *testing.T) {
		res := runCmd(offersCmd, append([]string{"--gpu", "H100", "--spot", "--max-price", "1"}, endpoints...)...)
		if res.code != exitFail {
			t.Errorf("exit %d, want 1", res.code)
		}
		// No provider sells spot any more: the on-demand fallbacks are over the cap.
		if !strings.Contains(res.out, "No eligible offer for H100 x1") || !strings.Contains(res.out, "OverOnDemandCap") {
			t.Errorf("output:\n%s", res.out)
		}
		if !strings.Contains(res.errOut, "no eligible offer") {
			t.Errorf("stderr %q does not say why it failed", res.errOut)
		}
		doc := decodeOffers(t, runCmd(offersCmd, append([]string{"--gpu", "H100", "--spot", "--max-price", "1", "-o", "json"}, endpoints...)...).out)
		if doc.Chosen != nil || doc.Ranked == nil || len(doc.Ranked) != 0 {
			t.Errorf("chosen %v ranked %v, want null and []", doc.Chosen, doc.Ranked)
		}
	})

	t.Run("a pin to a provider of containers", func(t *testing.T) {
		// RunPod sells only containers: pinned to it, a VM request has no
		// eligible offer, however cheap RunPod's are.
		res := runCmd(offersCmd, append([]string{"--gpu", "H100", "--spot", "--max-price", "3", "--regions", "us-west-1,us-east-1",
			"--region-policy", "LowestPrice", "--provider", "runpod", "-o", "json"}, endpoints...)...)
		if res.code != exitFail {
			t.Errorf("exit %d, want 1", res.code)
		}
		doc := decodeOffers(t, res.out)
		if doc.Chosen != nil || len(doc.Ranked) != 0 {
			t.Errorf("chose %+v from %+v, want nothing", doc.Chosen, doc.Ranked)
		}
		if doc.Counts[selector.ProviderPinnedElsewhere] == 0 || doc.Counts[selector.WrongMachineKind] == 0 {
			t.Errorf("counts %v, want offers of other providers pinned out and RunPod's of the wrong kind", doc.Counts)
		}
	})

	t.Run("a provider that fails is reported", func(t *testing.T) {
		args := append(slices.Clone(regionAwareArgs), endpoints...)
		args = append(args, "--paperspace-url", "http://127.0.0.1:1/v1", "-o", "json")
		res := runCmd(offersCmd, args...)
		if res.code != exitOK {
			t.Fatalf("exit %d, want 0 (the other providers still have offers)", res.code)
		}
		if !strings.Contains(res.errOut, "warning: paperspace: catalog unavailable") {
			t.Errorf("stderr %q does not warn about paperspace", res.errOut)
		}
		doc := decodeOffers(t, res.out)
		for _, c := range doc.Catalogs {
			if (c.Provider == providers.Paperspace) != (c.Error != "") {
				t.Errorf("catalog %+v", c)
			}
		}
	})
}

// TestOffersUsageErrors: the command refuses what the API server's
// admission refuses (tgpv1.ValidateSpec, run over the same table as the CRD
// in pkg/apis/tgp/v1), naming the flag and the spec field, and its own
// usage errors; it then exits 2 and writes nothing to stdout.
func TestOffersUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--gpu: spec.gpuType: Required value"},
		{[]string{"--gpu", strings.Repeat("A", 33)}, "--gpu: spec.gpuType: Too long"},
		{[]string{"--gpu", "H100", "--count", "0"}, "--count 0: a GPURequest's gpuCount must be between 1 and 16"},
		{[]string{"--gpu", "H100", "--count", "17"}, "--count: spec.gpuCount: Invalid value: 17: must be between 1 and 16"},
		{[]string{"--gpu", "H100", "--count", "-1"}, "--count: spec.gpuCount: Invalid value: -1"},
		{[]string{"--gpu", "H100", "--count", "4294967297"}, "--count 4294967297: a GPURequest's gpuCount must be between 1 and 16"},
		{[]string{"--gpu", "H100", "--max-price", "0"}, "--max-price: spec.maxPrice: Invalid value: 0: must be greater than 0"},
		{[]string{"--gpu", "H100", "--max-price", "NaN"}, "--max-price: spec.maxPrice: Invalid value: NaN"},
		{[]string{"--gpu", "H100", "--max-price", "+Inf"}, "--max-price +Inf: want a price in USD/h"},
		{[]string{"--gpu", "H100", "--max-spot-price", "1"}, "--max-spot-price: spec.maxSpotPrice: Invalid value: 1: maxSpotPrice requires spotInstance: true"},
		{[]string{"--gpu", "H100", "--spot", "--max-spot-price", "4", "--max-price", "3"}, "maxSpotPrice must not be greater than maxPrice"},
		{[]string{"--gpu", "H100", "--regions", "us-west-1,us-west-1"}, `--regions: spec.regionPreference[1]: Duplicate value: "us-west-1"`},
		{[]string{"--gpu", "H100", "--regions", "US_West"}, `--regions: spec.regionPreference[0]: Invalid value: "US_West"`},
		{[]string{"--gpu", "H100", "--regions", "r1,r2,r3,r4,r5,r6,r7,r8,r9,r10,r11,r12,r13,r14,r15,r16,r17"}, "--regions: spec.regionPreference: Too many"},
		{[]string{"--gpu", "H100", "--region-policy", "Cheapest"}, `--region-policy: spec.regionPolicy: Unsupported value: "Cheapest"`},
		{[]string{"--gpu", "H100", "--provider", "aws"}, `--provider: spec.provider: Unsupported value: "aws"`},
		{[]string{"--gpu", "H100", "--provider", "runpod", "--providers", "lambdalabs"}, "not among --providers"},
		{[]string{"--gpu", "H100", "-o", "yaml"}, "-o \"yaml\": want table or json"},
		{[]string{"--gpu", "H100", "extra"}, "unexpected arguments"},
		{[]string{"--gpu", "H100", "--providers", "aws"}, "unknown provider \"aws\""},
		{[]string{"--bogus"}, "flag provided but not defined"},
	} {
		res := runCmd(offersCmd, tt.args...)
		if res.code != exitUsage || !strings.Contains(res.errOut, tt.want) {
			t.Errorf("offers %q: exit %d, stderr %q; want 2 and %q", tt.args, res.code, res.errOut, tt.want)
		}
		if res.out != "" {
			t.Errorf("offers %q wrote to stdout: %q", tt.args, res.out)
		}
	}
}

// TestUnknownGPUTypeAcceptedByCLIAndAPI: a GPU type no provider sells (a
// wrong case, or a model not in the canonical list) is accepted by the CRD,
// by ValidateSpec and by the CLI alike, and simply has no offers: the CLI
// exits 1 (not 2) with every offer lost to WrongGPUType, and the controller
// reports UnknownGPUType on the admitted request.
func TestUnknownGPUTypeAcceptedByCLIAndAPI(t *testing.T) {
	st := h100Sims(t)
	endpoints := endpointArgs(t, st, simKey)
	env := testenv.StartT(t)
	ns, client := startController(t, env, st)
	for _, gpu := range []string{"h100", "B300"} {
		t.Run(gpu, func(t *testing.T) {
			spec := tgpv1.GPURequestSpec{GPUType: gpu}
			if errs := tgpv1.ValidateSpec(&spec, field.NewPath("spec")); len(errs) > 0 {
				t.Errorf("ValidateSpec refuses gpuType %q: %v", gpu, errs)
			}

			res := runCmd(offersCmd, append([]string{"--gpu", gpu}, endpoints...)...)
			if res.code != exitFail {
				t.Errorf("offers --gpu %s: exit %d, want 1 (accepted, no offer); stderr:\n%s", gpu, res.code, res.errOut)
			}
			if want := fmt.Sprintf("No eligible offer for %s x1.", gpu); !strings.Contains(res.out, want) {
				t.Errorf("output lacks %q:\n%s", want, res.out)
			}
			if want := fmt.Sprintf("note: --gpu %q is not a canonical GPU type", gpu); !strings.Contains(res.errOut, want) {
				t.Errorf("stderr lacks %q:\n%s", want, res.errOut)
			}
			if hint := strings.Contains(res.errOut, "did you mean H100?"); hint != (gpu == "h100") {
				t.Errorf("stderr %q: a did-you-mean hint only for a canonical type in another case", res.errOut)
			}
			doc := decodeOffers(t, runCmd(offersCmd, append([]string{"--gpu", gpu, "-o", "json"}, endpoints...)...).out)
			if doc.Chosen != nil || doc.Considered == 0 || doc.Counts[selector.WrongGPUType] != doc.Considered {
				t.Errorf("chosen %v, considered %d, counts %v; want every offer lost to WrongGPUType", doc.Chosen, doc.Considered, doc.Counts)
			}

			name := "unknown-" + strings.ToLower(gpu)
			_, err := client.TgpV1().GPURequests(ns).Create(t.Context(), &tgpv1.GPURequest{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("the API server refuses gpuType %q: %v", gpu, err)
			}
			var last *metav1.Condition
			err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				req, err := client.TgpV1().GPURequests(ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				last = meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionOffersAvailable)
				return last != nil && last.Status == metav1.ConditionFalse && last.Reason == "UnknownGPUType", nil
			})
			if err != nil {
				t.Errorf("the controller did not report UnknownGPUType within 30s; OffersAvailable %+v", last)
			}
		})
	}
}

func TestValidateCredentials(t *testing.T) {
	st := h100Sims(t)
	rows := func(t *testing.T, out string) map[string]string {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) == 0 || strings.Join(strings.Fields(lines[0]), " ") != "PROVIDER RESULT DETAIL" {
			t.Fatalf("no header:\n%s", out)
		}
		got := map[string]string{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) < 3 {
				t.Fatalf("row %q has no detail", l)
			}
			got[f[0]] = f[1]
		}
		return got
	}
	allProviders := []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace}

	t.Run("right key", func(t *testing.T) {
		res := runCmd(validateCmd, endpointArgs(t, st, simKey)...)
		if res.code != exitOK {
			t.Errorf("exit %d, want 0; stderr %q", res.code, res.errOut)
		}
		got := rows(t, res.out)
		for _, p := range allProviders {
			if got[p] != "ok" {
				t.Errorf("%s: %q, want ok:\n%s", p, got[p], res.out)
			}
		}
		if strings.Contains(res.out+res.errOut, simKey) {
			t.Errorf("the key appears in the output:\n%s%s", res.out, res.errOut)
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		const wrong = "wrong-key-93b1d4e6"
		res := runCmd(validateCmd, endpointArgs(t, st, wrong)...)
		t.Logf("validate-credentials with a wrong key:\n%s%s", res.out, res.errOut)
		if res.code != exitFail {
			t.Errorf("exit %d, want 1", res.code)
		}
		got := rows(t, res.out)
		for _, p := range allProviders {
			if got[p] != "unauthorized" {
				t.Errorf("%s: %q, want unauthorized:\n%s", p, got[p], res.out)
			}
		}
		all := res.out + res.errOut
		// Neither the key nor any 6-character piece of it is printed.
		for i := 0; i+6 <= len(wrong); i++ {
			if strings.Contains(all, wrong[i:i+6]) {
				t.Errorf("output contains %q, part of the key:\n%s", wrong[i:i+6], all)
			}
		}
		if !strings.Contains(res.errOut, "3 of 3 providers failed") {
			t.Errorf("stderr %q", res.errOut)
		}
	})

	t.Run("missing key and unreachable provider", func(t *testing.T) {
		args := append(endpointArgs(t, st, ""), "--paperspace-url", "http://127.0.0.1:1/v1")
		t.Setenv("LAMBDA_API_KEY", simKey)
		res := runCmd(validateCmd, args...)
		if res.code != exitFail {
			t.Errorf("exit %d, want 1", res.code)
		}
		got := rows(t, res.out)
		if got[providers.LambdaLabs] != "ok" || got[providers.RunPod] != "unauthorized" || got[providers.Paperspace] != "unauthorized" {
			t.Errorf("results %v, want lambdalabs ok (environment), the others unauthorized (no key):\n%s", got, res.out)
		}
		if !strings.Contains(res.out, "set RUNPOD_API_KEY") {
			t.Errorf("no hint where the RunPod key goes:\n%s", res.out)
		}
		if strings.Contains(res.out+res.errOut, simKey) {
			t.Errorf("the key appears in the output")
		}
		// With a key, an unreachable provider is an error, not unauthorized.
		t.Setenv("PAPERSPACE_API_KEY", simKey)
		if got := rows(t, runCmd(validateCmd, args...).out); got[providers.Paperspace] != "error" {
			t.Errorf("unreachable paperspace: %q, want error", got[providers.Paperspace])
		}
	})

	t.Run("bad credentials file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "creds")
		if err := os.WriteFile(path, []byte("AWS_SECRET=hunter2-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		res := runCmd(validateCmd, append(endpointArgs(t, st, ""), "--credentials-file", path)...)
		if res.code != exitUsage || !strings.Contains(res.errOut, `unknown key "AWS_SECRET"`) || strings.Contains(res.errOut, "hunter2") {
			t.Errorf("exit %d, stderr %q; want 2 naming the key but not its value", res.code, res.errOut)
		}
	})
}

func TestFormatPrice(t *testing.T) {
	for in, want := range map[float64]string{2: "2.00", 2.5: "2.50", 0.22: "0.22", 0.345: "0.345", 47.6: "47.60"} {
		if got := formatPrice(in); got != want {
			t.Errorf("formatPrice(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestValidateCredentialsLambdaSSHKey: Lambda without an SSH key name is
// left out and reported misconfigured; with a name the account lacks, the
// SSH key check (GET /api/v1/ssh-keys) says so; both fail the command.
func TestValidateCredentialsLambdaSSHKey(t *testing.T) {
	st := h100Sims(t)
	row := func(t *testing.T, out string) string {
		t.Helper()
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, providers.LambdaLabs+" ") {
				return strings.Join(strings.Fields(l), " ")
			}
		}
		t.Fatalf("no lambdalabs row:\n%s", out)
		return ""
	}
	withoutKeyName := func(args []string) []string {
		var out []string
		for i := 0; i < len(args); i++ {
			if args[i] == "--lambda-ssh-key-name" {
				i++
				continue
			}
			out = append(out, args[i])
		}
		return out
	}

	t.Run("no key name", func(t *testing.T) {
		res := runCmd(validateCmd, withoutKeyName(endpointArgs(t, st, simKey))...)
		if res.code != exitFail {
			t.Errorf("exit %d, want 1", res.code)
		}
		got := row(t, res.out)
		if !strings.HasPrefix(got, "lambdalabs misconfigured ") || !strings.Contains(got, "--lambda-ssh-key-name") {
			t.Errorf("lambdalabs row %q, want misconfigured naming --lambda-ssh-key-name", got)
		}
		if !strings.Contains(res.errOut, "1 of 3 providers failed") {
			t.Errorf("stderr %q", res.errOut)
		}
	})

	t.Run("two key names", func(t *testing.T) {
		args := append(withoutKeyName(endpointArgs(t, st, simKey)), "--lambda-ssh-key-names", "a,b")
		res := runCmd(validateCmd, args...)
		if got := row(t, res.out); res.code != exitFail || !strings.Contains(got, "exactly one") {
			t.Errorf("exit %d, lambdalabs row %q; want 1 and misconfigured: exactly one", res.code, got)
		}
	})

	t.Run("key not registered", func(t *testing.T) {
		args := append(withoutKeyName(endpointArgs(t, st, simKey)), "--lambda-ssh-key-name", "not-in-the-account")
		res := runCmd(validateCmd, args...)
		if res.code != exitFail {
			t.Errorf("exit %d, want 1", res.code)
		}
		if got := row(t, res.out); !strings.HasPrefix(got, "lambdalabs misconfigured ") ||
			!strings.Contains(got, `"not-in-the-account" is not registered`) || !strings.Contains(got, lambdasim.DefaultSSHKeyName) {
			t.Errorf("lambdalabs row %q, want misconfigured: the key is not registered, naming the registered one", got)
		}
	})

	t.Run("offers warns", func(t *testing.T) {
		res := runCmd(offersCmd, append(withoutKeyName(endpointArgs(t, st, simKey)), regionAwareArgs...)...)
		if !strings.Contains(res.errOut, "warning: lambdalabs: left out") {
			t.Errorf("offers stderr %q, want a warning that Lambda is left out", res.errOut)
		}
	})
}
