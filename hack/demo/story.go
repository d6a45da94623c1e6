package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// The story the demo tells with manifests/examples and hack/demo/catalog.json
// (whose note says what each example gets): VMs joining as Nodes on Lambda
// and Paperspace, a container on RunPod, a spot VM on Vast.ai bought with a
// bid, a failover out of a sold-out region, the spot VM outbid and relaunched
// on another host, and a GPUBudget holding a request until it is raised.
const (
	// notebookSecret holds the token of the container-notebook example
	// (manifests/examples/container-notebook.yaml); the demo creates it.
	notebookSecret = "notebook-token"
	// interruptTarget is the request whose machine the provider takes back:
	// a higher bid on Vast.ai stops its interruptible VM.
	interruptTarget = "spot-training-job"
)

// soldOut is the catalog entry the demo sells out after the operator has
// read the catalog, as another customer renting the last machines would:
// the operator's cached catalog still lists it, so the launch there gets
// Lambda's 400 insufficient-capacity and the operator fails over.
var soldOut = struct {
	Request, Provider, InstanceType, Region string
}{"region-aware-job", providers.LambdaLabs, "gpu_1x_h100_pcie", "us-west-1"}

// createNotebookSecret creates the Secret with container-notebook's Jupyter
// token: random, labelled with the operator's consent label.
func (d *demo) createNotebookSecret(ctx context.Context) error {
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	d.say("Creating the Secret %s (a random Jupyter token, labelled tgp.solanyn.com/bootstrap=true) for container-notebook's env", notebookSecret)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: notebookSecret, Namespace: requestNamespace,
			Labels: map[string]string{"tgp.solanyn.com/bootstrap": "true"}},
		Data: map[string][]byte{"token": []byte(hex.EncodeToString(token))},
	}
	_, err := d.kube.CoreV1().Secrets(requestNamespace).Create(ctx, s, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Secret %s/%s: %w", requestNamespace, notebookSecret, err)
	}
	return nil
}

// sellOut waits until the operator has read the provider's catalog, then
// sets the sold-out entry's capacity to zero through the admin API.
func (d *demo) sellOut(ctx context.Context) error {
	metric := fmt.Sprintf("gpu_operator_catalog_last_success_timestamp_seconds{provider=%q}", soldOut.Provider)
	err := d.poll(ctx, 100*time.Millisecond, time.Minute, "the operator to read the "+soldOut.Provider+" catalog", func() (bool, error) {
		v, ok := scrape(ctx, d.state.MetricsURL, metric)
		return ok && v > 0, nil
	})
	if err != nil {
		return err
	}
	q := url.Values{"provider": {soldOut.Provider}, "instanceType": {soldOut.InstanceType}, "region": {soldOut.Region}, "n": {"0"}}
	resp, err := d.admin(ctx, "/capacity?"+q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		d.say("The catalog sells no %s %s in %s: no sold-out region in this run", soldOut.Provider, soldOut.InstanceType, soldOut.Region)
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("selling out %s in %s: %s %s", soldOut.InstanceType, soldOut.Region, resp.Status, strings.TrimSpace(string(body)))
	}
	d.state.SoldOut = soldOut.Request
	d.say("Someone else rents the last %s %s in %s just after the operator read the catalog (admin API: POST /capacity ... n=0):",
		soldOut.Provider, soldOut.InstanceType, soldOut.Region)
	fmt.Fprintf(d.out, "    %s's first choice is now sold out; the operator learns it only from the launch answer\n", soldOut.Request)
	return nil
}

// admin POSTs to the simulators' admin API.
func (d *demo) admin(ctx context.Context, pathAndQuery string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.sims.Admin+pathAndQuery, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// scrape reads one sample of the operator's /metrics.
func scrape(ctx context.Context, metricsURL, series string) (float64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// settled reports whether a request has reached what the catalog can give
// it: Ready, or Pending because no offer is eligible (the selector's
// reasons are in its message).
func settled(r *tgpv1.GPURequest) bool {
	switch r.Status.Phase {
	case tgpv1.PhaseReady:
		return true
	case tgpv1.PhasePending:
		c := meta.FindStatusCondition(r.Status.Conditions, tgpv1.ConditionOffersAvailable)
		return r.Status.ObservedGeneration == r.Generation && c != nil && c.Status == metav1.ConditionFalse && c.Reason != "NoCatalog"
	}
	return false
}

// report prints what each request got, the failover and the Pending
// reasons.
func (d *demo) report(ctx context.Context, names []string, reqs map[string]*tgpv1.GPURequest) {
	d.say("What each example got:")
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	for _, n := range names {
		fmt.Fprintf(tw, "    %s\t%s\n", n, outcome(reqs[n]))
	}
	tw.Flush()
	d.joinReport(ctx, names, reqs)
	if d.state.SoldOut != "" {
		if r := reqs[d.state.SoldOut]; r != nil {
			for _, m := range d.launchFailures(ctx, r) {
				offer, why, _ := strings.Cut(m, ": ")
				fmt.Fprintf(d.out, "    failover: %s tried %s first:\n              %s\n", r.Name, offer, why)
			}
			fmt.Fprintf(d.out, "              and launched the next offer in the same sync: %s %s in %s (%s)\n",
				r.Status.Provider, r.Status.InstanceType, r.Status.ProviderRegion, r.Status.Region)
		}
	}
	for _, n := range names {
		if r := reqs[n]; r != nil && r.Status.Phase == tgpv1.PhasePending {
			fmt.Fprintf(d.out, "    pending:  %s: %s\n", n, r.Status.Message)
			if strings.Contains(r.Status.Message, "WrongMachineKind") {
				if r.Spec.Container == nil {
					fmt.Fprintf(d.out, "              (%s is sold here only as containers and it asks for a VM; with spec.container it would get one, as container-notebook does)\n", r.Spec.GPUType)
				} else {
					fmt.Fprintf(d.out, "              (%s is sold here only as VMs and it asks for a container; without spec.container it would join as a Node)\n", r.Spec.GPUType)
				}
			}
		}
	}
}

// outcome is one line about a request's state.
func outcome(r *tgpv1.GPURequest) string {
	if r == nil {
		return "not found"
	}
	st := r.Status
	if st.Phase == tgpv1.PhasePending {
		return "Pending: no eligible offer (below)"
	}
	if st.Phase != tgpv1.PhaseReady {
		return string(st.Phase)
	}
	s := fmt.Sprintf("Ready: %s %s in %s (%s), $%.2f/h", st.Provider, st.InstanceType, st.ProviderRegion, st.Region, price(st.HourlyPrice))
	if r.Spec.Container != nil {
		var ports []string
		for _, p := range st.Ports {
			ports = append(ports, fmt.Sprintf("%d/%s at %s:%d", p.Port, p.Protocol, p.PublicIP, p.PublicPort))
		}
		return s + ", container, " + strings.Join(ports, ", ")
	}
	return s + ", VM, Node " + st.NodeName
}

// launchFailures returns the messages of the request's LaunchFailed Events.
func (d *demo) launchFailures(ctx context.Context, r *tgpv1.GPURequest) []string {
	evs, err := d.kube.CoreV1().Events(r.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + r.Name + ",reason=LaunchFailed"})
	if err != nil {
		return []string{"(listing its Events: " + err.Error() + ")"}
	}
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Message)
	}
	slices.Sort(out)
	return out
}

// interrupt takes a request's machine back through the simulators' admin
// API, as the provider does: RunPod stops the pod (EXITED), Lambda reports
// the instance preempted, Paperspace turns the machine off.
func (d *demo) interrupt(ctx context.Context, r *tgpv1.GPURequest) error {
	resp, err := d.admin(ctx, fmt.Sprintf("/preempt?provider=%s&id=%s", url.QueryEscape(r.Status.Provider), url.QueryEscape(r.Status.InstanceID)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("interrupting %s: %s %s", r.Status.InstanceID, resp.Status, strings.TrimSpace(string(body)))
	}
	var m cloudsim.Machine
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return err
	}
	if !m.Preempted {
		return fmt.Errorf("the simulator did not take back %s: %+v", r.Status.InstanceID, m)
	}
	return nil
}

// howTakenBack says how each provider shows a machine it took back.
func howTakenBack(provider string) string {
	switch provider {
	case providers.RunPod:
		return "RunPod stops the pod (EXITED)"
	case providers.LambdaLabs:
		return "Lambda reports the instance preempted"
	case providers.Paperspace:
		return "Paperspace turns the machine off"
	case providers.VastAI:
		return "a higher bid ($0.10/h over ours) stops the interruptible instance"
	}
	return provider + " takes the machine back"
}

// budgetNamespace and budgetName are the team and the GPUBudget of the
// budget step: one request held over the budget's hourly cap, released when
// the cap is raised.
const (
	budgetNamespace = "team-budget"
	budgetName      = "team-budget"
	budgetRequest   = "over-budget"
)

// budgetStory copies a Ready VM example's spec into a namespace of its own
// under a GPUBudget whose maxHourlySpend is below the machine's price: the
// request is held (Pending, OverBudget naming the budget); raising the cap
// launches it. It returns how long the release took.
func (d *demo) budgetStory(ctx context.Context, reqs map[string]*tgpv1.GPURequest) (time.Duration, error) {
	var template *tgpv1.GPURequest
	for _, name := range slices.Sorted(maps.Keys(reqs)) {
		r := reqs[name]
		if r.Status.Phase == tgpv1.PhaseReady && r.Spec.Container == nil && r.Spec.Bootstrap == nil && r.Status.HourlyPrice != nil {
			template = r
			break
		}
	}
	if template == nil {
		return 0, fmt.Errorf("no Ready VM example without a bootstrap Secret to copy for the budget step")
	}
	machine := *template.Status.HourlyPrice
	if _, err := d.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: budgetNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return 0, err
	}
	cap := float64(int(machine*50)) / 100 // half the machine's price, in cents
	budget := &tgpv1.GPUBudget{ObjectMeta: metav1.ObjectMeta{Name: budgetName, Namespace: budgetNamespace},
		Spec: tgpv1.GPUBudgetSpec{MaxHourlySpend: &cap}}
	if _, err := d.client.TgpV1().GPUBudgets(budgetNamespace).Create(ctx, budget, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	d.say("Creating GPUBudget %s/%s (maxHourlySpend $%.2f/h) and GPURequest %s, a copy of %s, whose machine costs $%.2f/h",
		budgetNamespace, budgetName, cap, budgetRequest, template.Name, machine)
	req := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: budgetRequest, Namespace: budgetNamespace}, Spec: *template.Spec.DeepCopy()}
	if _, err := d.client.TgpV1().GPURequests(budgetNamespace).Create(ctx, req, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	held, err := d.waitInBudget(ctx, "held by the budget", func(r *tgpv1.GPURequest) bool {
		c := meta.FindStatusCondition(r.Status.Conditions, tgpv1.ConditionOffersAvailable)
		return r.Status.Phase == tgpv1.PhasePending && c != nil && c.Reason == "OverBudget"
	})
	if err != nil {
		return 0, err
	}
	d.state.BudgetHeld = held.Status.Message
	d.say("%s is Pending: %s", budgetRequest, held.Status.Message)

	raised := float64(int(machine*200+99)) / 100 // twice the price, rounded up to a cent
	b, err := d.client.TgpV1().GPUBudgets(budgetNamespace).Get(ctx, budgetName, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	b.Spec.MaxHourlySpend = &raised
	if _, err := d.client.TgpV1().GPUBudgets(budgetNamespace).Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		return 0, err
	}
	d.say("Raising %s's maxHourlySpend to $%.2f/h: kubectl -n %s patch gpubudget %s --type=merge -p '{\"spec\":{\"maxHourlySpend\":%.2f}}'",
		budgetName, raised, budgetNamespace, budgetName, raised)
	start := time.Now()
	ready, err := d.waitInBudget(ctx, "Ready", func(r *tgpv1.GPURequest) bool { return r.Status.Phase == tgpv1.PhaseReady })
	if err != nil {
		return 0, err
	}
	released := time.Since(start)
	d.say("%s is Ready %s after the raise on %s %s at $%.2f/h", budgetRequest, since(start), ready.Status.Provider, ready.Status.InstanceType, price(ready.Status.HourlyPrice))
	return released, nil
}

// waitInBudget polls the budget step's request until done holds.
func (d *demo) waitInBudget(ctx context.Context, what string, done func(*tgpv1.GPURequest) bool) (*tgpv1.GPURequest, error) {
	var got *tgpv1.GPURequest
	err := d.poll(ctx, 250*time.Millisecond, d.opts.timeout, fmt.Sprintf("%s/%s to be %s", budgetNamespace, budgetRequest, what), func() (bool, error) {
		r, err := d.client.TgpV1().GPURequests(budgetNamespace).Get(ctx, budgetRequest, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = r
		return done(r), nil
	})
	return got, err
}

// joinReport says how the VMs' Nodes joined: each with a certificate from
// a CSR its kubelet made with the machine's own minted token, approved and
// signed by kube-controller-manager; and how many tokens are left.
func (d *demo) joinReport(ctx context.Context, names []string, reqs map[string]*tgpv1.GPURequest) {
	issued, err := kubeletCSRs(ctx, d.kube)
	if err != nil {
		fmt.Fprintf(d.out, "    joins:    cannot list the CSRs: %v\n", err)
		return
	}
	var vms, viaCSR int
	example := ""
	for _, n := range names {
		r := reqs[n]
		if r == nil || r.Spec.Container != nil || r.Status.Phase != tgpv1.PhaseReady {
			continue
		}
		vms++
		if csr, ok := issued[r.Status.NodeName]; ok {
			viaCSR++
			if example == "" {
				example = fmt.Sprintf("%s: Node %s, CSR %s", n, r.Status.NodeName, csr)
			}
		}
	}
	tokens, err := d.kube.CoreV1().Secrets(controller.TokenNamespace).List(ctx, metav1.ListOptions{LabelSelector: controller.LabelTokenMachine})
	left := "?"
	if err == nil {
		left = strconv.Itoa(len(tokens.Items))
	}
	fmt.Fprintf(d.out, "    joins:    %d of %d VM Nodes registered as system:node:<name> with a certificate from an approved CSR made with the machine's own token; join tokens left in %s: %s\n",
		viaCSR, vms, controller.TokenNamespace, left)
	if example != "" {
		fmt.Fprintf(d.out, "              e.g. %s\n", example)
	}
}

// kubeletCSRs maps each Node name to the approved, signed kubelet client
// CSR its certificate came from ("<csr> by <requesting user>").
func kubeletCSRs(ctx context.Context, kube kubernetes.Interface) (map[string]string, error) {
	list, err := kube.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, c := range list.Items {
		approved := false
		for _, cond := range c.Status.Conditions {
			approved = approved || (cond.Type == certificatesv1.CertificateApproved && cond.Status == corev1.ConditionTrue)
		}
		block, _ := pem.Decode(c.Status.Certificate)
		if !approved || block == nil || c.Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		if node, ok := strings.CutPrefix(cert.Subject.CommonName, "system:node:"); ok {
			out[node] = c.Name + " by " + c.Spec.Username
		}
	}
	return out, nil
}
