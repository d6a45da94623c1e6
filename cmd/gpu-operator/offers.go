package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/clock"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/credentials"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
	"github.com/solanyn/gpu-operator/pkg/selector/specreq"
)

// Exit codes of the subcommands.
const (
	exitOK    = 0 // an offer was chosen; every credential works
	exitFail  = 1 // no offer fits; a credential failed
	exitUsage = 2 // bad flags or configuration
)

// cliProviders are the provider flags the subcommands share with the
// operator, plus where the API keys come from. The subcommands run outside
// the cluster, so keys come from a credentials file or the environment, not
// from the credentials Secret (--credentials-secret and
// --paperspace-prices-configmap are accepted for symmetry and ignored; the
// Paperspace prices are the shipped table's).
type cliProviders struct {
	providers       providerFlags
	credentialsFile string
	timeout         time.Duration

	keys map[string]string // provider name -> key, from the file
}

func (c *cliProviders) register(fs *flag.FlagSet) {
	c.providers.register(fs)
	fs.StringVar(&c.credentialsFile, "credentials-file", "", "File of KEY=VALUE lines holding the API keys (keys LAMBDA_API_KEY, RUNPOD_API_KEY, PAPERSPACE_API_KEY, VAST_API_KEY or the provider names); it wins over the environment variables of the same names.")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "Deadline of the whole command.")
}

// build loads the credentials file and creates the enabled adapters.
func (c *cliProviders) build() ([]providers.Provider, error) {
	if c.credentialsFile != "" {
		keys, err := credentials.ReadFile(c.credentialsFile)
		if err != nil {
			return nil, err
		}
		c.keys = keys
	}
	adapters, err := c.providers.build(c.key)
	if err != nil {
		return nil, err
	}
	if len(adapters) == 0 && len(c.providers.leftOut) == 0 {
		return nil, errors.New("no provider enabled (--providers is empty)")
	}
	return adapters, nil
}

// key returns a provider's API key: the credentials file's, else the
// environment's.
func (c *cliProviders) key(provider string) string {
	if k := c.keys[provider]; k != "" {
		return k
	}
	return strings.TrimSpace(os.Getenv(credentials.EnvVar(provider)))
}

// redact removes every configured API key from s. Provider errors never
// carry keys by contract; this is the second line of defence for anything
// the subcommands print.
func (c *cliProviders) redact(s string) string {
	for _, name := range credentials.Providers {
		if k := c.key(name); k != "" {
			s = strings.ReplaceAll(s, k, "[redacted]")
		}
	}
	return s
}

// commandContext ends at the deadline or on SIGINT/SIGTERM.
func commandContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, func() { cancel(); stop() }
}

// droppedReporter is an adapter that leaves machine types out of its
// catalog for a reason it can name (Paperspace: no GPU OS template).
type droppedReporter interface {
	Dropped() map[string]string
}

// offersFlags are the flags of `gpu-operator offers`.
type offersFlags struct {
	gpu          string
	count        int
	spot         bool
	maxPrice     float64
	maxSpotPrice float64
	regions      string
	regionPolicy string
	provider     string
	verbose      bool
	output       string
	namespace    string
	kubeconfig   string
	cli          cliProviders
}

// runOffers is `gpu-operator offers`: a dry run of the selection. It fetches
// every enabled provider's catalog once, ranks it for the request the flags
// describe exactly as the controller would for a GPURequest with that spec
// (an empty unavailable-offerings cache, as after a restart), and prints the
// ranking. It exits 0 when an offer is chosen, 1 when none fits and 2 on
// usage errors.
func runOffers(args []string, out io.Writer) int {
	return offersCommand(args, out, os.Stderr)
}

func offersCommand(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("offers", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var f offersFlags
	fs.StringVar(&f.gpu, "gpu", "", "GPU type (required), as spec.gpuType; providers offer the canonical ones: "+strings.Join(providers.CanonicalGPUTypes, ", ")+".")
	fs.IntVar(&f.count, "count", 1, "GPUs on the one machine, 1 to 16.")
	fs.BoolVar(&f.spot, "spot", false, "Prefer spot capacity; on-demand is then only the --max-price fallback.")
	fs.Float64Var(&f.maxPrice, "max-price", 0, "On-demand cap in USD/h for the whole machine (the spot cap too without --max-spot-price).")
	fs.Float64Var(&f.maxSpotPrice, "max-spot-price", 0, "Spot cap in USD/h for the whole machine; needs --spot.")
	fs.StringVar(&f.regions, "regions", "", "Comma-separated canonical regions or prefixes, most preferred first; empty: any region.")
	fs.StringVar(&f.regionPolicy, "region-policy", string(tgpv1.RegionPolicyOrdered), "Ordered (earlier regions win) or LowestPrice (cheapest across the listed regions).")
	fs.StringVar(&f.provider, "provider", "", "Pin to one provider: lambdalabs, runpod, paperspace or vastai.")
	fs.BoolVar(&f.verbose, "v", false, "Also list every losing offer of the GPU type with its reason.")
	fs.StringVar(&f.output, "o", "table", "Output format: table or json.")
	fs.StringVar(&f.namespace, "namespace", "", "Also check the offers against this namespace's GPUBudgets (read with --kubeconfig): an offer a budget would refuse is marked OverBudget.")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to a kubeconfig for --namespace; empty uses the in-cluster config.")
	f.cli.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(errOut, "Usage: gpu-operator offers --gpu TYPE [flags]")
		fmt.Fprintln(errOut, "\nRanks the providers' live offers for a request exactly as the operator would, without launching anything.")
		fmt.Fprintln(errOut, "API keys come from --credentials-file or LAMBDA_API_KEY, RUNPOD_API_KEY, PAPERSPACE_API_KEY and VAST_API_KEY.")
		fmt.Fprintln(errOut, "Exit status: 0 an offer was chosen, 1 none fits, 2 usage error.")
		fmt.Fprintln(errOut, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	usageErr := func(err error) int {
		fmt.Fprintf(errOut, "gpu-operator offers: %v\n", err)
		fmt.Fprintln(errOut, "Run 'gpu-operator offers -h' for usage.")
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	spec, err := f.spec(set, fs.Args())
	if err != nil {
		return usageErr(err)
	}
	if f.output != "table" && f.output != "json" {
		return usageErr(fmt.Errorf("-o %q: want table or json", f.output))
	}
	if f.provider != "" && !slices.Contains(splitList(f.cli.providers.enabled), f.provider) {
		return usageErr(fmt.Errorf("--provider %s is not among --providers %q", f.provider, f.cli.providers.enabled))
	}
	req := specreq.RequestFromSpec(spec)
	adapters, err := f.cli.build()
	if err != nil {
		return usageErr(err)
	}
	if !slices.Contains(providers.CanonicalGPUTypes, spec.GPUType) {
		// Accepted, as the API server accepts it: no provider offers it, and
		// the controller would report UnknownGPUType.
		fmt.Fprintf(errOut, "note: --gpu %q is not a canonical GPU type %s; no provider offers it\n", spec.GPUType, gpuTypeHint(spec.GPUType))
	}

	ctx, cancel := commandContext(f.cli.timeout)
	defer cancel()
	for _, l := range f.cli.providers.leftOut {
		fmt.Fprintf(errOut, "warning: %s: left out, its offers are missing: %s\n", l.name, l.reason)
	}
	catalog := providers.NewCatalog(adapters, 0, clock.RealClock{})
	offers, _ := catalog.Offers(ctx)
	status := catalog.Status()
	var catalogs []catalogJSON
	for _, a := range adapters {
		st := status[a.Name()]
		c := catalogJSON{Provider: a.Name(), Offers: len(st.Offers)}
		if st.Err != nil {
			c.Error = f.cli.redact(st.Err.Error())
			fmt.Fprintf(errOut, "warning: %s: catalog unavailable, its offers are missing: %s\n", a.Name(), c.Error)
		}
		catalogs = append(catalogs, c)
		if d, ok := a.(droppedReporter); ok {
			dropped := d.Dropped()
			for _, mt := range slices.Sorted(maps.Keys(dropped)) {
				fmt.Fprintf(errOut, "note: %s: machine type %s has no offer: %s\n", a.Name(), mt, dropped[mt])
			}
		}
	}
	res := selector.Select(req, offers, selector.Unavailable{})
	verdict := budgetVerdict{chosen: 0}
	if f.namespace != "" {
		h, names, err := budgetCheck(ctx, f.kubeconfig, f.namespace)
		if err != nil {
			fmt.Fprintf(errOut, "gpu-operator offers: --namespace %s: %v\n", f.namespace, err)
			return exitFail
		}
		verdict = judge(res.RankedOffers(), h, int32(req.GPUCount))
		if len(names) == 0 {
			fmt.Fprintf(errOut, "note: namespace %s has no GPUBudget; no budget limits its offers\n", f.namespace)
		}
	}

	switch f.output {
	case "json":
		err = writeOffersJSON(out, res, catalogs, verdict)
	default:
		err = writeOffersTable(out, res, f.verbose, verdict)
	}
	if err != nil {
		fmt.Fprintf(errOut, "gpu-operator offers: writing output: %v\n", err)
		return exitFail
	}
	if _, ok := res.Best(); !ok {
		fmt.Fprintf(errOut, "gpu-operator offers: no eligible offer for %s x%d\n", req.GPUType, req.GPUCount)
		return exitFail
	}
	if verdict.chosen < 0 {
		fmt.Fprintf(errOut, "gpu-operator offers: every eligible offer is over a GPUBudget of namespace %s\n", f.namespace)
		return exitFail
	}
	return exitOK
}

// specFlags name the flag that sets each spec field ValidateSpec may report.
var specFlags = map[string]string{
	"spec.gpuType":          "--gpu",
	"spec.gpuCount":         "--count",
	"spec.regionPreference": "--regions",
	"spec.regionPolicy":     "--region-policy",
	"spec.spotInstance":     "--spot",
	"spec.maxSpotPrice":     "--max-spot-price",
	"spec.maxPrice":         "--max-price",
	"spec.provider":         "--provider",
}

// spec turns the flags into the GPURequest spec they describe and checks it
// with tgpv1.ValidateSpec, the Go form of the CRD's admission rules, so the
// command accepts exactly the specs the API server accepts. set holds the
// names of the flags given on the command line; rest are the positional
// arguments.
//
// A flag stands for a field written in a manifest. ValidateSpec reads a Go
// zero gpuCount as unset (as omitempty and defaulting make it), so a given
// --count 0, which would be a written gpuCount: 0 that the CRD refuses, and
// a count that does not fit gpuCount's int32 are refused here; so is an
// infinite price, which JSON cannot carry.
func (f *offersFlags) spec(set map[string]bool, rest []string) (tgpv1.GPURequestSpec, error) {
	var errs []error
	if len(rest) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", rest))
	}
	spec := tgpv1.GPURequestSpec{
		GPUType:          f.gpu,
		GPUCount:         int32(f.count),
		RegionPreference: splitList(f.regions),
		RegionPolicy:     tgpv1.RegionPolicy(f.regionPolicy),
		SpotInstance:     f.spot,
		Provider:         f.provider,
	}
	if int(spec.GPUCount) != f.count || set["count"] && f.count == 0 {
		errs = append(errs, fmt.Errorf("--count %d: a GPURequest's gpuCount must be between 1 and 16", f.count))
	}
	price := func(name string, v float64) *float64 {
		if !set[name] {
			return nil
		}
		if math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("--%s %v: want a price in USD/h", name, v))
			return nil
		}
		return &v
	}
	spec.MaxPrice = price("max-price", f.maxPrice)
	spec.MaxSpotPrice = price("max-spot-price", f.maxSpotPrice)
	for _, e := range tgpv1.ValidateSpec(&spec, field.NewPath("spec")) {
		path, _, _ := strings.Cut(e.Field, "[")
		if name, ok := specFlags[path]; ok {
			errs = append(errs, fmt.Errorf("%s: %w", name, e))
		} else {
			errs = append(errs, e)
		}
	}
	return spec, errors.Join(errs...)
}

// gpuTypeHint suggests the canonical GPU type a user may have meant.
func gpuTypeHint(gpu string) string {
	if i := slices.IndexFunc(providers.CanonicalGPUTypes, func(t string) bool { return strings.EqualFold(t, gpu) }); i >= 0 {
		return fmt.Sprintf("(did you mean %s?)", providers.CanonicalGPUTypes[i])
	}
	return "(the canonical types are " + strings.Join(providers.CanonicalGPUTypes, ", ") + ")"
}

// offerColumns are the columns describing one offer, in both tables.
const offerColumns = "PROVIDER\tTYPE\tGPUS\tREGION\tNATIVE\tCAPACITY\tPRICE ($/h)\tSOURCE"

func offerCells(o providers.Offer) string {
	return strings.Join([]string{o.Provider, o.InstanceType, strconv.Itoa(o.GPUCount), o.Region, o.ProviderRegion,
		string(o.Capacity), formatPrice(o.HourlyPrice), string(o.PriceSource)}, "\t")
}

// formatPrice prints a price with at least two decimals and as many more as
// it has (RunPod's per-GPU prices times a count can have three).
func formatPrice(p float64) string {
	s := strconv.FormatFloat(p, 'f', -1, 64)
	dot := strings.IndexByte(s, '.')
	switch {
	case math.IsNaN(p) || math.IsInf(p, 0):
		return s
	case dot < 0:
		return s + ".00"
	case len(s)-dot-1 < 2:
		return s + "0"
	}
	return s
}

// writeOffersTable prints the ranked offers, the chosen one marked; with
// verbose, every losing offer of the GPU type with its reason; and the
// selection summary.
func writeOffersTable(out io.Writer, res selector.Result, verbose bool, verdict budgetVerdict) error {
	out = &trimWriter{w: out}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	rejected := res.Rejected()
	if res.Eligible > 0 {
		fmt.Fprintln(w, "RANK\t"+offerColumns+"\t")
		for i, o := range res.RankedOffers() {
			marker := ""
			if i == verdict.chosen {
				marker = "<- CHOSEN"
			} else if obe := verdict.refused[i]; obe != nil {
				marker = fmt.Sprintf("OverBudget (GPUBudget %s: %s)", obe.Budget, obe.Limit)
			}
			fmt.Fprintf(w, "%d\t%s\t%s\n", i+1, offerCells(o), marker)
		}
	} else {
		fmt.Fprintf(w, "No eligible offer for %s x%d.\n", res.Request.GPUType, res.Request.GPUCount)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if verbose && len(rejected) > 0 {
		fmt.Fprintln(out)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NOT ELIGIBLE\t"+offerColumns+"\tREASON\tDETAIL")
		for _, r := range rejected {
			fmt.Fprintf(w, "-\t%s\t%s\t%s\n", offerCells(r.Offer), r.Reason, r.Detail)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, res.Summary(0))
	if !verbose && len(rejected) > 0 {
		fmt.Fprintf(out, "(-v lists the %d losing %s offers and why)\n", len(rejected), res.Request.GPUType)
	}
	return nil
}

// offersJSON is the stable document `offers -o json` prints.
type offersJSON struct {
	Request    requestJSON             `json:"request"`
	Chosen     *providers.Offer        `json:"chosen"`
	Ranked     []providers.Offer       `json:"ranked"`
	Rejected   []rejectionJSON         `json:"rejected"`
	Considered int                     `json:"considered"`
	Counts     map[selector.Reason]int `json:"counts"`
	Summary    string                  `json:"summary"`
	// Catalogs says how many offers each provider contributed and why a
	// provider contributed none.
	Catalogs []catalogJSON `json:"catalogs"`
	// OverBudget are the ranked offers a GPUBudget of --namespace refuses
	// (absent without --namespace).
	OverBudget []overBudgetJSON `json:"overBudget,omitempty"`
}

type overBudgetJSON struct {
	Offer   providers.Offer `json:"offer"`
	Budget  string          `json:"budget"`
	Limit   string          `json:"limit"`
	Message string          `json:"message"`
}

// requestJSON is the selector.Request the offers were ranked for.
type requestJSON struct {
	GPUType      string   `json:"gpuType"`
	GPUCount     int      `json:"gpuCount"`
	Regions      []string `json:"regions"`
	RegionPolicy string   `json:"regionPolicy"`
	Spot         bool     `json:"spot"`
	MaxSpotPrice float64  `json:"maxSpotPrice,omitempty"`
	MaxPrice     float64  `json:"maxPrice,omitempty"`
	Provider     string   `json:"provider,omitempty"`
}

type rejectionJSON struct {
	Offer  providers.Offer `json:"offer"`
	Reason selector.Reason `json:"reason"`
	Detail string          `json:"detail"`
}

type catalogJSON struct {
	Provider string `json:"provider"`
	Offers   int    `json:"offers"`
	Error    string `json:"error,omitempty"`
}

func writeOffersJSON(out io.Writer, res selector.Result, catalogs []catalogJSON, verdict budgetVerdict) error {
	r := res.Request
	rejected := res.Rejected()
	doc := offersJSON{
		Request: requestJSON{GPUType: r.GPUType, GPUCount: r.GPUCount, Regions: r.Regions, RegionPolicy: string(r.Policy),
			Spot: r.Spot, MaxSpotPrice: r.MaxSpotPrice, MaxPrice: r.MaxPrice, Provider: r.Provider},
		Ranked:     res.RankedOffers(),
		Rejected:   make([]rejectionJSON, 0, len(rejected)),
		Considered: res.Considered,
		Counts:     res.Counts,
		Summary:    res.Summary(0),
		Catalogs:   catalogs,
	}
	if doc.Request.Regions == nil {
		doc.Request.Regions = []string{}
	}
	if doc.Ranked == nil {
		doc.Ranked = []providers.Offer{}
	}
	if doc.Counts == nil {
		doc.Counts = map[selector.Reason]int{}
	}
	if ranked := doc.Ranked; verdict.chosen >= 0 && verdict.chosen < len(ranked) {
		doc.Chosen = &ranked[verdict.chosen]
	}
	for i, o := range doc.Ranked {
		if obe := verdict.refused[i]; obe != nil {
			doc.OverBudget = append(doc.OverBudget, overBudgetJSON{Offer: o, Budget: obe.Budget, Limit: obe.Limit, Message: obe.Message})
		}
	}
	for _, rej := range rejected {
		doc.Rejected = append(doc.Rejected, rejectionJSON{Offer: rej.Offer, Reason: rej.Reason, Detail: rej.Detail})
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// runValidateCredentials is `gpu-operator validate-credentials`: one cheap
// authenticated call (the instance list) per enabled provider, and for
// Lambda the SSH key list (its launches need the configured key), reported
// as ok, unauthorized, misconfigured (Lambda without an SSH key name, or
// with one the account does not have) or error. Keys are never printed. It
// exits 0 only when every provider answered and is configured.
func runValidateCredentials(args []string, out io.Writer) int {
	return validateCredentialsCommand(args, out, os.Stderr)
}

func validateCredentialsCommand(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("validate-credentials", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var c cliProviders
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(errOut, "Usage: gpu-operator validate-credentials [flags]")
		fmt.Fprintln(errOut, "\nMakes one authenticated list call per enabled provider and reports whether its API key works.")
		fmt.Fprintln(errOut, "API keys come from --credentials-file or LAMBDA_API_KEY, RUNPOD_API_KEY, PAPERSPACE_API_KEY and VAST_API_KEY.")
		fmt.Fprintln(errOut, "Exit status: 0 every provider works, 1 one does not, 2 usage error.")
		fmt.Fprintln(errOut, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(errOut, "gpu-operator validate-credentials: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	adapters, err := c.build()
	if err != nil {
		fmt.Fprintf(errOut, "gpu-operator validate-credentials: %v\n", err)
		return exitUsage
	}
	ctx, cancel := commandContext(c.timeout)
	defer cancel()

	type check struct{ result, detail string }
	checks := make([]check, len(adapters))
	var wg sync.WaitGroup
	for i, a := range adapters {
		wg.Go(func() {
			instances, err := a.Instances(ctx)
			if c, ok := a.(sshKeyChecker); ok && err == nil {
				if err := c.CheckSSHKey(ctx); err != nil {
					result := "error"
					if providers.IsClass(err, providers.ClassInvalid) {
						result = "misconfigured"
					}
					checks[i] = check{result, err.Error()}
					return
				}
			}
			switch {
			case err == nil:
				checks[i] = check{"ok", fmt.Sprintf("authenticated; %d operator instances", len(instances))}
			case providers.IsClass(err, providers.ClassUnauthorized):
				detail := err.Error()
				if c.key(a.Name()) == "" {
					detail += fmt.Sprintf(" (set %s or add it to --credentials-file)", credentials.EnvVar(a.Name()))
				}
				checks[i] = check{"unauthorized", detail}
			default:
				checks[i] = check{"error", err.Error()}
			}
		})
	}
	wg.Wait()

	w := tabwriter.NewWriter(&trimWriter{w: out}, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROVIDER\tRESULT\tDETAIL")
	failed := len(c.providers.leftOut)
	for _, l := range c.providers.leftOut {
		fmt.Fprintf(w, "%s\t%s\t%s\n", l.name, "misconfigured", l.reason)
	}
	for i, a := range adapters {
		if checks[i].result != "ok" {
			failed++
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", a.Name(), checks[i].result, c.redact(checks[i].detail))
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(errOut, "gpu-operator validate-credentials: writing output: %v\n", err)
		return exitFail
	}
	if failed > 0 {
		fmt.Fprintf(errOut, "gpu-operator validate-credentials: %d of %d providers failed\n", failed, len(adapters)+len(c.providers.leftOut))
		return exitFail
	}
	return exitOK
}

// trimWriter drops the spaces tabwriter pads the last cell of a line with.
// It buffers at most one line.
type trimWriter struct {
	w    io.Writer
	line []byte
}

func (t *trimWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != '\n' {
			t.line = append(t.line, b)
			continue
		}
		t.line = append(bytes.TrimRight(t.line, " "), '\n')
		if _, err := t.w.Write(t.line); err != nil {
			return 0, err
		}
		t.line = t.line[:0]
	}
	return len(p), nil
}
