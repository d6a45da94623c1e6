package selector

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// fuzzInput reads bytes, yielding zeros once they run out.
type fuzzInput []byte

func (in *fuzzInput) next() byte {
	if len(*in) == 0 {
		return 0
	}
	b := (*in)[0]
	*in = (*in)[1:]
	return b
}

func pickByte[T any](b byte, s []T) T { return s[int(b)%len(s)] }

var (
	fuzzPolicies = []Policy{"", Ordered, LowestPrice, "Bogus"}
	fuzzPins     = []string{"", providers.LambdaLabs, providers.RunPod, "nowhere"}
	// fuzzRegions includes the empty string and near misses of prefixes.
	fuzzRegions = []string{"us-west", "us-west-1", "us-west-2", "us-westfoo", "us-east-1", "us", "eu-west-1", "", "us-", "-"}
	fuzzCounts  = []int{1, 2, 4, 8, 0}
	fuzzPrices  = []float64{0, 0.10, 0.22, 0.25, 0.50, 1.00, 2.00, 3.00, 10.0, 12.0, 1e9}
	// fuzzRequestKinds includes a kind no offer has.
	fuzzRequestKinds = []providers.MachineKind{"", providers.VM, providers.Container, "bogus"}
	fuzzOfferKinds   = []providers.MachineKind{"", providers.VM, providers.Container, providers.Container}
	// fuzzNoBootstrap is what each of four bits adds to Request.NoBootstrap.
	fuzzNoBootstrap = []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace, "nowhere"}
)

// decodeFuzzCase turns bytes into a request (valid or not), a catalog of up
// to 64 offers with unique ids and a set of unavailable offerings. The
// machine kinds and the providers without a bootstrap come from the high
// bits of the region count and of each offer's region byte, so a corpus
// written before they existed still decodes to VM requests and offers with
// every bootstrap.
func decodeFuzzCase(data []byte) (Request, []providers.Offer, refUnavailable) {
	in := fuzzInput(data)
	flags := in.next()
	req := Request{
		Spot:         flags&1 != 0,
		Policy:       pickByte(flags>>1, fuzzPolicies),
		Provider:     pickByte(flags>>3, fuzzPins),
		GPUType:      pickByte(in.next(), propGPUTypes),
		GPUCount:     pickByte(in.next(), fuzzCounts),
		MaxSpotPrice: pickByte(in.next(), fuzzPrices),
		MaxPrice:     pickByte(in.next(), fuzzPrices),
	}
	regions := in.next()
	req.Kind = pickByte(regions>>2, fuzzRequestKinds)
	for i, p := range fuzzNoBootstrap {
		if regions&(0x10<<i) != 0 {
			req.NoBootstrap = append(req.NoBootstrap, p)
		}
	}
	for range regions % 4 {
		req.Regions = append(req.Regions, pickByte(in.next(), fuzzRegions))
	}
	var catalog []providers.Offer
	unavailable := refUnavailable{keys: map[providers.OfferingKey]bool{}, providers: map[string]bool{}}
	if flags&0x80 != 0 {
		unavailable.providers[pickByte(flags>>5, fuzzPins)] = true
	}
	for i := 0; len(in) > 0 && i < 64; i++ {
		b0, b1, b2 := in.next(), in.next(), in.next()
		o := providers.Offer{
			Provider:     pickByte(b0, propProviders),
			InstanceType: fmt.Sprintf("t%d", i),
			GPUType:      pickByte(b0>>2, propGPUTypes),
			GPUCount:     pickByte(b0>>4, fuzzCounts),
			Region:       pickByte(b1, fuzzRegions),
			Capacity:     providers.OnDemand,
			HourlyPrice:  pickByte(b2>>3, fuzzPrices),
			Available:    b2&2 == 0,
			Kind:         pickByte(b1>>6, fuzzOfferKinds),
		}
		o.ProviderRegion = o.Region
		if b2&1 != 0 {
			o.Capacity = providers.Spot
		}
		if b2&4 != 0 {
			unavailable.keys[o.Key()] = true
		}
		catalog = append(catalog, o)
	}
	return req, catalog, unavailable
}

func FuzzSelect(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		req, catalog, unavailable := decodeFuzzCase(data)
		res := Select(req, catalog, unavailable.selectorInput(nil))
		if s := res.Summary(80); len(s) > 80 {
			t.Errorf("Summary(80) is %d bytes long: %q", len(s), s)
		}
		if req.Policy == "Bogus" {
			// An unknown policy ranks as Ordered.
			req.Policy = Ordered
		}
		checkResult(t, req, catalog, unavailable, res)
		reversed := slices.Clone(catalog)
		slices.Reverse(reversed)
		got := Select(res.Request, reversed, unavailable.selectorInput(nil))
		if diff := cmp.Diff(observe(res), observe(got)); diff != "" {
			t.Errorf("the result depends on the catalog's order (-original +reversed):\n%s", diff)
		}
	})
}
