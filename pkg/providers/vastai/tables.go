package vastai

import (
	"strings"
)

// gpuModel is one Vast.ai gpu_name's canonical GPU type; models sold with
// two memory sizes under one name split on the per-GPU memory (gpu_ram, in
// MB: the spec's "GPU RAM in MB").
type gpuModel struct {
	canonical string
	// large, when set, is the canonical type of the model's large-memory
	// variant: gpu_ram at or above largeMB.
	large   string
	largeMB int
}

// GPUTypes maps Vast.ai GPU names (an offer's gpu_name) to canonical GPU
// types (providers.CanonicalGPUTypes). A name not listed is left out of the
// catalog (and not searched for: the adapter's search asks for these names
// only).
//
// Sources. Vast.ai's own documents show "RTX 4090" (creating-instances-with-
// api.mdx), "RTX A5000" (the Instance example of openapi.yaml) and RTX 3090
// (the gpu_name filter example, written "RTX_3090": the CLI's spelling, with
// "_" for " "). The data-center names ("A100 PCIE", "A100 SXM4", "H100
// PCIE", "H100 SXM", "H100 NVL", "H200 NVL", "Tesla V100") are the
// marketplace's as observed by third-party tools that map onto it; the rest
// follow the same pattern (NVIDIA's model name, "RTX " before the
// workstation and GeForce cards) and are an ASSUMPTION until seen in a
// search (`vastai search offers` lists the names in use). A100 and V100 are
// sold under one name in two memory sizes: 80 GB A100s and 32 GB V100s are
// told apart by gpu_ram.
var GPUTypes = map[string]gpuModel{
	"RTX 3090":   {canonical: "RTX3090"},
	"RTX 4090":   {canonical: "RTX4090"},
	"RTX 5090":   {canonical: "RTX5090"},
	"RTX A4000":  {canonical: "A4000"},
	"RTX A5000":  {canonical: "A5000"},
	"RTX A6000":  {canonical: "A6000"},
	"A10":        {canonical: "A10"},
	"A40":        {canonical: "A40"},
	"L4":         {canonical: "L4"},
	"L40":        {canonical: "L40"},
	"L40S":       {canonical: "L40S"},
	"A100 PCIE":  {canonical: "A100", large: "A100-80GB", largeMB: 60000},
	"A100 SXM4":  {canonical: "A100", large: "A100-80GB", largeMB: 60000},
	"H100 PCIE":  {canonical: "H100"},
	"H100 SXM":   {canonical: "H100"},
	"H100 NVL":   {canonical: "H100"},
	"H200":       {canonical: "H200"},
	"H200 NVL":   {canonical: "H200"},
	"GH200 SXM":  {canonical: "GH200"},
	"B200":       {canonical: "B200"},
	"Tesla V100": {canonical: "V100", large: "V100-32GB", largeMB: 24000},
}

// GPUType is the canonical GPU type of a Vast.ai GPU name with gpuRAM MB
// per GPU; ok is false for a name not in GPUTypes.
func GPUType(name string, gpuRAM int) (string, bool) {
	m, ok := GPUTypes[strings.TrimSpace(name)]
	if !ok {
		return "", false
	}
	if m.large != "" && gpuRAM >= m.largeMB {
		return m.large, true
	}
	return m.canonical, true
}

// gpuNames are the keys of GPUTypes, sorted: the search's gpu_name filter.
var gpuNames = func() []string {
	out := make([]string, 0, len(GPUTypes))
	for n := range GPUTypes {
		out = append(out, n)
	}
	sortStrings(out)
	return out
}()

// USStates maps a US location's subdivision (the part of a geolocation
// before ", US") to a canonical region, on the same lines as the other
// providers' US data centers (RunPod's US-CA is us-west-1, US-WA us-west-2,
// US-TX us-south-1, US-DE and US-NC us-east-1, US-GA us-east-2, US-IL
// us-midwest-1, US-KS us-midwest-2). Vast.ai hosts give states by name
// ("California, US"; the spec's examples: "Washington, US", "California,
// United States"). A state not listed is kept as CountryRegion("US").
var USStates = map[string]string{
	"California": "us-west-1",
	"Washington": "us-west-2", "Oregon": "us-west-2", "Idaho": "us-west-2",
	"Nevada": "us-west-3", "Arizona": "us-west-3", "Utah": "us-west-3", "Colorado": "us-west-3", "New Mexico": "us-west-3",
	"Texas": "us-south-1", "Oklahoma": "us-south-1", "Louisiana": "us-south-1", "Arkansas": "us-south-1",
	"Virginia": "us-east-1", "New York": "us-east-1", "New Jersey": "us-east-1", "Pennsylvania": "us-east-1",
	"Delaware": "us-east-1", "Maryland": "us-east-1", "North Carolina": "us-east-1", "Massachusetts": "us-east-1",
	"Connecticut": "us-east-1", "District of Columbia": "us-east-1", "New Hampshire": "us-east-1", "Maine": "us-east-1",
	"Vermont": "us-east-1", "Rhode Island": "us-east-1", "West Virginia": "us-east-1",
	"Georgia": "us-east-2", "Florida": "us-east-2", "South Carolina": "us-east-2", "Tennessee": "us-east-2",
	"Alabama": "us-east-2", "Mississippi": "us-east-2", "Kentucky": "us-east-2",
	"Illinois": "us-midwest-1", "Ohio": "us-midwest-1", "Michigan": "us-midwest-1", "Indiana": "us-midwest-1",
	"Wisconsin": "us-midwest-1", "Minnesota": "us-midwest-1",
	"Kansas": "us-midwest-2", "Missouri": "us-midwest-2", "Nebraska": "us-midwest-2", "Iowa": "us-midwest-2",
	"North Dakota": "us-midwest-2", "South Dakota": "us-midwest-2",
}

// CAProvinces maps a Canadian location's province to a canonical region
// (RunPod's Montreal data centers are ca-east-1); others are kept as
// CountryRegion("CA").
var CAProvinces = map[string]string{
	"Quebec": "ca-east-1", "Ontario": "ca-east-1", "New Brunswick": "ca-east-1", "Nova Scotia": "ca-east-1",
	"British Columbia": "ca-west-1", "Alberta": "ca-west-1", "Saskatchewan": "ca-west-1", "Manitoba": "ca-west-1",
}

// Countries maps an ISO 3166-1 alpha-2 country code (the spec's
// geolocation filter: "two letter country code") to a canonical region,
// for countries without a subdivision table, on the lines of the other
// providers' regions (RunPod's EU-NL is eu-west-1, EU-FR eu-west-3, EU-CZ
// eu-central-2, EU-RO eu-east-1, EU-SE eu-north-1, EUR-IS eu-north-2,
// EUR-NO eu-north-3, OC-AU ap-southeast-2, AP-JP ap-northeast-1; Lambda's
// europe-central-1 is eu-central-1, europe-south-1 eu-south-1, asia-south-1
// ap-south-1, asia-northeast-2 ap-northeast-2, me-west-1 me-west-1). A
// country not listed is kept as CountryRegion(code), never dropped.
var Countries = map[string]string{
	"NL": "eu-west-1", "BE": "eu-west-1", "LU": "eu-west-1", "IE": "eu-west-1",
	"GB": "eu-west-2",
	"FR": "eu-west-3",
	"DE": "eu-central-1",
	"CZ": "eu-central-2", "PL": "eu-central-2", "AT": "eu-central-2", "CH": "eu-central-2", "SK": "eu-central-2",
	"HU": "eu-central-2", "SI": "eu-central-2",
	"RO": "eu-east-1", "BG": "eu-east-1", "GR": "eu-east-1", "RS": "eu-east-1", "HR": "eu-east-1", "MD": "eu-east-1",
	"UA": "eu-east-1",
	"SE": "eu-north-1", "FI": "eu-north-1", "DK": "eu-north-1", "EE": "eu-north-1", "LV": "eu-north-1", "LT": "eu-north-1",
	"IS": "eu-north-2",
	"NO": "eu-north-3",
	"IT": "eu-south-1",
	"ES": "eu-south-2", "PT": "eu-south-2",
	"JP": "ap-northeast-1",
	"KR": "ap-northeast-2",
	"TW": "ap-east-1", "HK": "ap-east-1",
	"SG": "ap-southeast-1", "MY": "ap-southeast-1", "TH": "ap-southeast-1", "VN": "ap-southeast-1",
	"ID": "ap-southeast-1", "PH": "ap-southeast-1",
	"AU": "ap-southeast-2", "NZ": "ap-southeast-2",
	"IN": "ap-south-1",
	"IL": "me-west-1",
	"AE": "me-central-1", "SA": "me-central-1", "QA": "me-central-1",
	"BR": "sa-east-1", "AR": "sa-east-1", "CL": "sa-east-1",
	"ZA": "af-south-1",
}

// CountryNames maps the country names Vast.ai writes in full in some
// geolocations (the spec's v1 instance example: "California, United
// States") to their codes.
var CountryNames = map[string]string{
	"United States": "US", "United States of America": "US", "USA": "US", "Canada": "CA",
	"United Kingdom": "GB", "Great Britain": "GB", "Germany": "DE", "France": "FR", "Netherlands": "NL",
	"The Netherlands": "NL", "Belgium": "BE", "Luxembourg": "LU", "Ireland": "IE", "Czechia": "CZ",
	"Czech Republic": "CZ", "Poland": "PL", "Austria": "AT", "Switzerland": "CH", "Slovakia": "SK",
	"Hungary": "HU", "Slovenia": "SI", "Romania": "RO", "Bulgaria": "BG", "Greece": "GR", "Serbia": "RS",
	"Croatia": "HR", "Moldova": "MD", "Ukraine": "UA", "Sweden": "SE", "Finland": "FI", "Denmark": "DK",
	"Estonia": "EE", "Latvia": "LV", "Lithuania": "LT", "Iceland": "IS", "Norway": "NO", "Italy": "IT",
	"Spain": "ES", "Portugal": "PT", "Japan": "JP", "South Korea": "KR", "Korea": "KR", "Taiwan": "TW",
	"Hong Kong": "HK", "Singapore": "SG", "Malaysia": "MY", "Thailand": "TH", "Vietnam": "VN",
	"Indonesia": "ID", "Philippines": "PH", "Australia": "AU", "New Zealand": "NZ", "India": "IN",
	"Israel": "IL", "United Arab Emirates": "AE", "Saudi Arabia": "SA", "Qatar": "QA", "Brazil": "BR",
	"Argentina": "AR", "Chile": "CL", "South Africa": "ZA", "Turkey": "TR", "Türkiye": "TR", "Mexico": "MX",
	"Russia": "RU", "China": "CN", "Kazakhstan": "KZ",
}

// CountryRegion is the canonical region a location in country code is
// kept under when no table maps it: "<code>-country-1" ("tr-country-1":
// somewhere in Turkey). It has the shape of every canonical region, so a
// request can name it (region: tr-country-1) or a prefix of it (region:
// tr), and it is stable: the same country always maps to the same name.
func CountryRegion(code string) string {
	return strings.ToLower(code) + "-country-1"
}

// unknownRegion is where a location with no readable country is kept:
// "zz-<slug>-1" from its letters, or zz-unknown-1.
func unknownRegion(location string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(location) {
		if r >= 'a' && r <= 'z' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "zz-unknown-1"
	}
	return "zz-" + b.String() + "-1"
}

// Region maps a Vast.ai geolocation ("Texas, US", "California, United
// States", "FR", "Quebec, CA") to a canonical region. The text after the
// last comma (all of it when there is none) is the country, as a two-letter
// code or a name in CountryNames; the text before it is the subdivision,
// used for the US (USStates) and Canada (CAProvinces). Then Countries, and
// for anything no table maps, CountryRegion of the country code: no
// location is ever dropped. A country that is neither a code nor a known
// name is kept under "zz-<its letters>-1".
func Region(geolocation string) string {
	loc := strings.TrimSpace(geolocation)
	sub, country := "", loc
	if i := strings.LastIndexByte(loc, ','); i >= 0 {
		sub, country = strings.TrimSpace(loc[:i]), strings.TrimSpace(loc[i+1:])
	}
	code, ok := countryCode(country)
	if !ok {
		return unknownRegion(country)
	}
	switch code {
	case "US":
		if r, ok := USStates[sub]; ok {
			return r
		}
		return CountryRegion(code)
	case "CA":
		if r, ok := CAProvinces[sub]; ok {
			return r
		}
		return CountryRegion(code)
	}
	if r, ok := Countries[code]; ok {
		return r
	}
	return CountryRegion(code)
}

// countryCode reads a two-letter code (any case) or a known country name.
func countryCode(s string) (string, bool) {
	if len(s) == 2 && isLetter(s[0]) && isLetter(s[1]) {
		return strings.ToUpper(s), true
	}
	if c, ok := CountryNames[s]; ok {
		return c, true
	}
	for name, c := range CountryNames {
		if strings.EqualFold(name, s) {
			return c, true
		}
	}
	return "", false
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }
