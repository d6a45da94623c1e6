package paperspace

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// defaultPrices is the table shipped with the operator: Paperspace's list
// prices as published on its pricing pages (the API has no pricing endpoint).
//
//go:embed prices.json
var defaultPrices []byte

// PriceTable maps Paperspace machine type labels (A100-80Gx4) to the
// on-demand USD/h of the whole machine. A table is immutable; the With*
// methods return a new one.
type PriceTable struct {
	// Source says where the prices come from: the URLs of the published
	// price pages for the shipped table, with "configmap:<ns>/<name>" or
	// "overrides" in front when some prices were replaced.
	Source string
	// Date is the day the shipped prices were read (YYYY-MM-DD).
	Date string

	entries map[string]price
}

// price is one machine type's price and where it came from.
type price struct {
	usd    float64
	source string
}

// priceFile is the JSON form of prices.json.
type priceFile struct {
	Source string             `json:"source"`
	Date   string             `json:"date"`
	Note   string             `json:"note,omitempty"`
	Prices map[string]float64 `json:"prices"`
}

// ParsePriceTable reads a table in the format of the shipped prices.json:
//
//	{"source": "<urls>", "date": "YYYY-MM-DD", "note": "...",
//	 "prices": {"A100-80G": 3.18, "A100-80Gx8": 25.44, ...}}
//
// Every price must be a positive, finite USD/h for the whole machine.
func ParsePriceTable(data []byte) (*PriceTable, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f priceFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("paperspace price table: %w", err)
	}
	if f.Source == "" {
		return nil, fmt.Errorf("paperspace price table: source is empty")
	}
	if len(f.Prices) == 0 {
		return nil, fmt.Errorf("paperspace price table: no prices")
	}
	t := &PriceTable{Source: f.Source, Date: f.Date, entries: make(map[string]price, len(f.Prices))}
	for mt, usd := range f.Prices {
		if mt == "" || !validPrice(usd) {
			return nil, fmt.Errorf("paperspace price table: machine type %q: price %v is not a positive number", mt, usd)
		}
		t.entries[mt] = price{usd: usd, source: f.Source}
	}
	return t, nil
}

var defaultTable = sync.OnceValue(func() *PriceTable {
	t, err := ParsePriceTable(defaultPrices)
	if err != nil {
		panic(err) // the embedded file is checked by the tests
	}
	return t
})

// DefaultPriceTable returns the table shipped with the operator.
func DefaultPriceTable() *PriceTable { return defaultTable() }

func validPrice(usd float64) bool { return usd > 0 && !math.IsInf(usd, 0) && !math.IsNaN(usd) }

// Price returns the USD/h of a machine type.
func (t *PriceTable) Price(machineType string) (float64, bool) {
	p, ok := t.entries[machineType]
	return p.usd, ok
}

// SourceOf says where the price of a machine type came from: the table's
// published-price URLs, "configmap:<ns>/<name>" or "overrides". Offers carry
// PriceSourceStatic either way; this tells the two apart.
func (t *PriceTable) SourceOf(machineType string) string {
	return t.entries[machineType].source
}

// MachineTypes returns the priced machine types, sorted.
func (t *PriceTable) MachineTypes() []string {
	return slices.Sorted(maps.Keys(t.entries))
}

// WithOverrides returns a copy of the table with the given machine types
// priced as given (USD/h, whole machine); types not in the table are added.
// A zero, negative or non-finite price withdraws the type from the table,
// so it yields no offers. Overridden entries report the source "overrides".
func (t *PriceTable) WithOverrides(prices map[string]float64) *PriceTable {
	return t.with("overrides", prices)
}

// WithConfigMapData returns a copy of the table with the prices of a
// Kubernetes ConfigMap applied. The ConfigMap has one key per machine type
// label and a decimal USD/h string as its value, for the whole machine:
//
//	data:
//	  A100-80Gx8: "24.00"
//	  H100: "5.50"
//	  RTX4000: "0"   # withdraw the type: no offers for it
//
// Labels are valid ConfigMap keys as they are. A value that is not a
// non-negative decimal number is an error naming the key; "0" withdraws the
// type. The entries it sets report the source "configmap:<namespace>/<name>",
// and so does the front of the new table's Source.
func (t *PriceTable) WithConfigMapData(namespace, name string, data map[string]string) (*PriceTable, error) {
	src := "configmap:" + namespace + "/" + name
	prices := make(map[string]float64, len(data))
	for key, val := range data {
		usd, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || usd < 0 || math.IsInf(usd, 0) || math.IsNaN(usd) {
			return nil, fmt.Errorf("paperspace prices %s: key %q: %q is not a non-negative USD/h decimal", src, key, val)
		}
		prices[key] = usd
	}
	return t.with(src, prices), nil
}

func (t *PriceTable) with(src string, prices map[string]float64) *PriceTable {
	n := &PriceTable{Source: src + " over " + t.Source, Date: t.Date, entries: maps.Clone(t.entries)}
	for mt, usd := range prices {
		if validPrice(usd) {
			n.entries[mt] = price{usd: usd, source: src}
		} else {
			delete(n.entries, mt)
		}
	}
	return n
}
