package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// leakMarker is in every key of this test, right and wrong.
const leakMarker = "sk-test-4f9a1c2b7e"

// bootstrapMarker is a comment line of the bootstrap template this test
// puts in a Secret of the requests' namespace.
const bootstrapMarker = "bootstrap-secret-9c1e2d"

// envMarker is the value of a container env variable this test takes from
// a Secret of the requests' namespace: RunPod must get it, nothing the
// operator writes or serves may show it.
const envMarker = "container-env-secret-3b7f0a"

// valuesMarker is a value of the bootstrap's valuesFrom Secret, rendered
// into the user data as .Values.authkey: the machine must get it, nothing
// the operator writes or serves may show it.
const valuesMarker = "bootstrap-values-secret-7d2e4c"

// mintedToken finds the join token (--mint-join-tokens) the test's
// template writes into a machine's user data.
var mintedToken = regexp.MustCompile(`# token ([a-z0-9]{6}\.[a-z0-9]{16}) sha256:[0-9a-f]{64}`)

// leakVerbosity is the highest -v the operator accepts (main.go refuses
// more: from -v=8 client-go logs API response bodies, Secrets included).
const leakVerbosity = 7

// TestNoCredentialLeak runs the operator with known keys from the
// credentials Secret, exercises launches (one with a bootstrap template
// from a Secret, a container with an env value from a Secret), an
// authentication failure (one key rotated to a wrong one and back) and a
// rate limit, then searches the operator's full log at the highest
// verbosity it accepts, every Event, every GPURequest and a /metrics scrape
// for the keys, the template's and the env value's markers and their base64
// encodings.
func TestNoCredentialLeak(t *testing.T) {
	bin := operatorBin(t)
	ctx := t.Context()
	// leakVerbosity is the highest the binary accepts: one more is refused
	// (exit 2) before the operator does anything.
	refused := exec.CommandContext(ctx, bin, "--kubeconfig", "/nonexistent", fmt.Sprintf("-v=%d", leakVerbosity+1))
	if out, err := refused.CombinedOutput(); refused.ProcessState == nil || refused.ProcessState.ExitCode() != 2 {
		t.Fatalf("the operator at -v=%d: %v, want exit status 2\n%s", leakVerbosity+1, err, out)
	}
	keys := map[string]string{
		providers.LambdaLabs: leakMarker + "-lambda-0001",
		providers.RunPod:     leakMarker + "-runpod-0002",
		providers.Paperspace: leakMarker + "-paperspace-03",
	}
	wrongKey := leakMarker + "-runpod-WRONG"
	c, err := startCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	s := startSims(simConfigs(benchCatalog(), keys, cloudsim.Faults{}, 1))
	defer s.close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	startNodeRegistrar(actx, c, s, 16)

	secrets := c.kube.CoreV1().Secrets(operatorNamespace)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gpu-operator-credentials", Namespace: operatorNamespace},
		StringData: keys}
	if _, err := secrets.Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A bootstrap template with a marker line, consented to by the label;
	// the node agent still names the Node from its hostname line.
	bootstrapTemplate := "#cloud-config\n# " + bootstrapMarker + "\n# {{ .Values.authkey }}\n# token {{ .JoinToken }} {{ .CACertHash }}\nhostname: {{ .NodeName }}\n"
	bootstrap := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "leak-bootstrap", Namespace: requestNamespace,
		Labels: map[string]string{"tgp.solanyn.com/bootstrap": "true"}},
		StringData: map[string]string{"userdata": bootstrapTemplate}}
	if _, err := c.kube.CoreV1().Secrets(requestNamespace).Create(ctx, bootstrap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	values := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "leak-values", Namespace: requestNamespace,
		Labels: map[string]string{"tgp.solanyn.com/bootstrap": "true"}},
		StringData: map[string]string{"authkey": valuesMarker}}
	if _, err := c.kube.CoreV1().Secrets(requestNamespace).Create(ctx, values, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setKey := func(provider, key string) {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"stringData": map[string]string{provider: key}})
		if _, err := secrets.Patch(ctx, secret.Name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// No key in the environment: the Secret is the only source.
	// --unavailable-ttl 15s: an auth failure also marks the offer unavailable
	// for this long (pkg/controller/provision.go) and a rotated key only
	// lifts the provider block (UnblockProviders), not that mark, so with the
	// default 3 minutes the request would wait that long after the fix.
	args := append(append(c.operatorArgs(), "--leader-elect=false",
		"--poll-interval", "1s", "--unavailable-ttl", "15s", "-v", strconv.Itoa(leakVerbosity)), s.operatorArgs()...)
	op, err := startOperator(bin, args, []string{"LAMBDA_API_KEY=", "RUNPOD_API_KEY=", "PAPERSPACE_API_KEY="})
	if err != nil {
		t.Fatal(err)
	}
	defer op.stop(5 * time.Second)
	if err := op.waitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	w, err := watchRequests(actx, c.client)
	if err != nil {
		t.Fatal(err)
	}
	logf := testLogf(t)
	// create makes a request for one GPU of the i-th bench kind (an RTX4090
	// is a RunPod container).
	create := func(name string, i int, provider string) {
		t.Helper()
		r := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: requestNamespace}, Spec: benchSpec(i)}
		r.Spec.Provider = provider
		if _, err := c.client.TgpV1().GPURequests(requestNamespace).Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, tail(op.logs.String(), 30))
		}
	}
	get := func(name string) *tgpv1.GPURequest {
		r, err := c.client.TgpV1().GPURequests(requestNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return &tgpv1.GPURequest{}
		}
		return r
	}

	// Launches on every provider, one with the bootstrap template and one
	// container with an env value from a consent-labelled Secret.
	envSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "leak-env", Namespace: requestNamespace,
		Labels: map[string]string{"tgp.solanyn.com/bootstrap": "true"}},
		StringData: map[string]string{"token": envMarker}}
	if _, err := c.kube.CoreV1().Secrets(requestNamespace).Create(ctx, envSecret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range benchGPUTypes {
		create(fmt.Sprintf("launch-%d", i), i, "")
	}
	boot := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap", Namespace: requestNamespace},
		Spec: tgpv1.GPURequestSpec{GPUType: benchGPUTypes[0], GPUCount: 1,
			Bootstrap: &tgpv1.BootstrapSource{SecretName: bootstrap.Name, Key: "userdata", ValuesFrom: &tgpv1.ValuesSource{SecretName: values.Name}}}}
	if _, err := c.client.TgpV1().GPURequests(requestNamespace).Create(ctx, boot, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	withEnv := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "container-env", Namespace: requestNamespace}, Spec: benchSpec(1)}
	withEnv.Spec.Container.Env = []tgpv1.ContainerEnvVar{{Name: "TOKEN", ValueFrom: &tgpv1.SecretKeyRef{SecretName: envSecret.Name, Key: "token"}}}
	if _, err := c.client.TgpV1().GPURequests(requestNamespace).Create(ctx, withEnv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("five requests Ready", func() bool { return w.countReady() == 5 })
	if r := get(boot.Name); r.Status.Phase != tgpv1.PhaseReady {
		t.Fatalf("request %s is %q, not Ready", boot.Name, r.Status.Phase)
	}
	// The template was really rendered into a machine's user data, so its
	// marker passed through the operator.
	var joinToken string
	for _, m := range s.machines() {
		if strings.Contains(m.UserData, bootstrapMarker) && strings.Contains(m.UserData, valuesMarker) && !strings.Contains(m.UserData, "{{") {
			if sub := mintedToken.FindStringSubmatch(m.UserData); sub != nil {
				joinToken = sub[1]
			}
		}
	}
	if joinToken == "" {
		t.Fatal("no machine carries the rendered bootstrap template with a minted join token")
	}
	// The env value really reached RunPod, so it passed through the operator.
	if !slices.ContainsFunc(s.byName[providers.RunPod].(interface{ CreateBodies() []json.RawMessage }).CreateBodies(),
		func(b json.RawMessage) bool { return strings.Contains(string(b), envMarker) }) {
		t.Fatal("no RunPod pod was created with the Secret's env value")
	}
	logf("launched on all three providers, one with the bootstrap template, one container with an env value from a Secret")

	// An authentication failure: RunPod's key rotated to a wrong one, a
	// request pinned to RunPod, then the right key back.
	setKey(providers.RunPod, wrongKey)
	create("auth", 1, providers.RunPod) // an RTX4090 container
	poll("the auth failure shows in the request's status or Events", func() bool {
		r := get("auth")
		if mentionsAuth(r.Status.Message) {
			return true
		}
		for _, cnd := range r.Status.Conditions {
			if mentionsAuth(cnd.Message) {
				return true
			}
		}
		evs, err := c.kube.CoreV1().Events(requestNamespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=auth"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if mentionsAuth(e.Message) {
				return true
			}
		}
		return false
	})
	logf("auth failure reported; restoring the key")
	setKey(providers.RunPod, keys[providers.RunPod])
	poll("the auth request Ready after the key is restored", func() bool { return get("auth").Status.Phase == tgpv1.PhaseReady })

	// A rate limit: Paperspace answers 429 to everything for a while.
	ps := s.byName[providers.Paperspace].Core()
	ps.SetFaults(cloudsim.Faults{RateLimitRate: 1, RetryAfter: time.Second})
	create("limited", 2, providers.Paperspace) // an A4000 VM
	poll("Paperspace sends 429s", func() bool { return ps.Counters().RateLimited >= 3 })
	ps.SetFaults(cloudsim.Faults{})
	poll("the rate-limited request Ready", func() bool { return get("limited").Status.Phase == tgpv1.PhaseReady })
	logf("rate limit exercised (%d 429s)", ps.Counters().RateLimited)

	// Collect everything the operator wrote or serves.
	metrics, err := httpGet(ctx, "http://"+op.metricsAddr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := c.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evJSON, _ := json.Marshal(evs)
	reqs, err := c.client.TgpV1().GPURequests("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reqJSON, _ := json.Marshal(reqs)
	op.stop(10 * time.Second)
	logs := op.logs.String()
	if len(evs.Items) == 0 || len(reqs.Items) != 7 || len(logs) == 0 || !strings.Contains(metrics, "workqueue") {
		t.Fatalf("nothing to search: %d events, %d requests, %d bytes of log, metrics %d bytes", len(evs.Items), len(reqs.Items), len(logs), len(metrics))
	}
	tokenSecret := joinToken[strings.Index(joinToken, ".")+1:]
	needles := []string{leakMarker, bootstrapMarker, envMarker, valuesMarker, tokenSecret}
	for _, k := range append([]string{wrongKey, bootstrapTemplate, envMarker, valuesMarker, tokenSecret, joinToken}, keys[providers.LambdaLabs], keys[providers.RunPod], keys[providers.Paperspace]) {
		needles = append(needles, base64.StdEncoding.EncodeToString([]byte(k)), base64.RawURLEncoding.EncodeToString([]byte(k)))
	}
	// The markers' base64 at every alignment, for a key or template inside
	// a longer encoded string (a whole header, a Secret's data in a JSON
	// body).
	for _, marker := range []string{leakMarker, bootstrapMarker, envMarker, valuesMarker} {
		for pad := range 3 {
			enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", pad) + marker))
			needles = append(needles, enc[(pad*4+2)/3+1:len(enc)-4])
		}
	}
	for _, src := range []struct{ name, text string }{
		{fmt.Sprintf("operator log (-v=%d)", leakVerbosity), logs},
		{"operator log's hex dumps (protobuf bodies), decoded", undumpHex(logs)},
		{"Events", string(evJSON)}, {"GPURequests", string(reqJSON)}, {"/metrics", metrics},
	} {
		for _, n := range needles {
			if i := strings.Index(src.text, n); i >= 0 {
				lo, hi := max(0, i-200), min(len(src.text), i+len(n)+50)
				t.Errorf("%s contains %q: ...%s...", src.name, n, src.text[lo:hi])
			}
		}
	}
	t.Logf("searched %d bytes of log, %d Events, %d GPURequests and %d bytes of metrics for %d needles",
		len(logs), len(evs.Items), len(reqs.Items), len(metrics), len(needles))
}

// hexDumpLine is one line of encoding/hex.Dump output (client-go's form for
// a protobuf body, one klog value line per 16 bytes): offset, the bytes in
// hex, then their printable characters between bars (or, on the last line
// of a truncated body, client-go's "[truncated N chars]").
var hexDumpLine = regexp.MustCompile(`^\s*[0-9a-f]{8}  ([0-9a-f ]*)`)

// undumpHex returns the bytes of every hex dump in log, one dump a line, so
// a value that a dump splits across lines can still be found.
func undumpHex(log string) string {
	var out []byte
	inDump := false
	for _, line := range strings.Split(log, "\n") {
		m := hexDumpLine.FindStringSubmatch(line)
		if m == nil {
			if inDump {
				out = append(out, '\n')
			}
			inDump = false
			continue
		}
		inDump = true
		for _, h := range strings.Fields(m[1]) {
			if b, err := hex.DecodeString(h); err == nil && len(b) == 1 {
				out = append(out, b...)
			}
		}
	}
	return string(out)
}

func mentionsAuth(s string) bool {
	s = strings.ToLower(s)
	for _, w := range []string{"auth", "api key", "credential", "401", "forbidden"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
