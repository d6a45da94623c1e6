package bootstrap

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

func nested(n int, open, body string) string {
	return strings.Repeat(open, n) + body + strings.Repeat("{{end}}", n)
}

func TestRangeBombRefused(t *testing.T) {
	data := testData(20)
	for _, depth := range []int{5, 6, 8} {
		bomb := nested(depth, "{{range $.Labels}}", "{{.}}")
		start := time.Now()
		_, err := Render(bomb, data, Limits{})
		took := time.Since(start)
		if got := classOf(t, err); got != ClassTooComplex {
			t.Fatalf("%d nested ranges over 20 labels: class %q (%v), want %s", depth, got, err, ClassTooComplex)
		}
		t.Logf("%d nested ranges over 20 labels refused in %v: %v", depth, took, err)
	}
	// Mixed forms, and the line is the innermost range that alone is over:
	// 20^4 * 4 > 100k at the fourth level, on line 4.
	bomb := "{{range .Labels}}\n{{range $.Labels}}\n{{with $.Labels}}{{range .}}\n{{range $.Labels}}\n" +
		"{{range $.Labels}}{{range $.Labels}}{{range $.Taints}}{{.Key}}{{end}}{{end}}{{end}}{{end}}{{end}}{{end}}{{end}}{{end}}"
	_, err := Render(bomb, data, Limits{})
	if got := classOf(t, err); got != ClassTooComplex {
		t.Fatalf("mixed bomb: class %q (%v), want %s", got, err, ClassTooComplex)
	}
	if line := lineOf2(t, err); line < 1 || line > 4 {
		t.Errorf("mixed bomb refused at line %d, want the line of a range (1-4)", line)
	}
}

func TestStepsUseRealSizes(t *testing.T) {
	bomb := nested(8, "{{range $.Labels}}", "x")
	// No labels: the bomb runs its bodies zero times.
	if out, err := Render(bomb, testData(0), Limits{}); err != nil || out != "" {
		t.Fatalf("bomb over no labels = %q, %v; want \"\", nil", out, err)
	}
	// 2^8 iterations fit in the default budget; 3^8 * 2 steps do not fit in 10,000.
	if out, err := Render(bomb, testData(2), Limits{}); err != nil || len(out) != 256 {
		t.Fatalf("bomb over 2 labels = %d bytes, %v; want 256, nil", len(out), err)
	}
	if _, err := Render(bomb, testData(3), Limits{MaxSteps: 10_000}); classOf(t, err) != ClassTooComplex {
		t.Fatalf("bomb over 3 labels with 10k steps: %v, want TooComplex", err)
	}
	// Both branches of an if count, the costlier one: a bomb in an
	// else is still refused.
	hidden := "{{if true}}ok{{else}}" + nested(8, "{{range $.Labels}}", "x") + "{{end}}"
	if _, err := Render(hidden, testData(20), Limits{}); classOf(t, err) != ClassTooComplex {
		t.Fatalf("bomb in an untaken else: %v, want TooComplex", err)
	}
}

func TestRangeOnlyOverLabelsAndTaints(t *testing.T) {
	data := testData(3)
	for _, tc := range []struct {
		name, text string
		class      string
	}{
		{"int literal", `{{range 100000000000}}x{{end}}`, ClassForbidden},
		{"int with var", `{{range $i := 5}}{{$i}}{{end}}`, ClassForbidden},
		{"variable", `{{$l := .Labels}}{{range $l}}x{{end}}`, ClassForbidden},
		{"string field", `{{range .NodeName}}x{{end}}`, ClassForbidden},
		{"function result", `{{range (slice .Taints 0)}}x{{end}}`, ClassForbidden},
		{"pipeline", `{{range .Labels | len}}x{{end}}`, ClassForbidden},
		{"dot of a label", `{{range .Labels}}{{range .}}x{{end}}{{end}}`, ClassForbidden},
		{"dot of with string", `{{with .NodeName}}{{range .}}x{{end}}{{end}}`, ClassForbidden},
		{"Labels of a with", `{{with .Taints}}{{range .Labels}}x{{end}}{{end}}`, ClassForbidden},
		{"declare $", `{{$ := .Labels}}{{range $.Labels}}x{{end}}`, ClassForbidden},
		{"assign $", `{{$ = 1}}`, ClassForbidden},
		{"range declares $", `{{range $ := .Labels}}{{end}}`, ClassForbidden},
		{"call", `{{call .NodeName}}`, ClassForbidden},
		{"labels", `{{range .Labels}}x{{end}}`, ""},
		{"$.taints in range", `{{range .Labels}}{{range $.Taints}}x{{end}}{{end}}`, ""},
		{"dot in with", `{{with .Labels}}{{range .}}x{{end}}{{end}}`, ""},
		{"with $", `{{range .Taints}}{{with $}}{{range .Labels}}x{{end}}{{end}}{{end}}`, ""},
		{"kv", `{{range $k, $v := $.Labels}}x{{end}}`, ""},
		{"values", `{{range .Values}}x{{end}}`, ClassForbidden},
		{"values of a with", `{{with .Values}}{{range .}}x{{end}}{{end}}`, ClassForbidden},
	} {
		_, err := Render(tc.text, data, Limits{})
		if got := classOf(t, err); got != tc.class {
			t.Errorf("%s: %q: class %q (%v), want %q", tc.name, tc.text, got, err, tc.class)
		}
	}
}

func TestRecursionRefused(t *testing.T) {
	for _, text := range []string{
		`{{define "a"}}{{template "a" .}}{{end}}{{template "a" .}}`,
		`{{block "a" .}}{{template "a" .}}{{end}}`,
		`x{{template "bootstrap" .}}`,
		`{{define "bootstrap"}}{{template "bootstrap" .}}{{end}}`,
		`{{define "other"}}x{{end}}y`,
	} {
		_, err := Render(text, testData(1), Limits{})
		if got := classOf(t, err); got != ClassForbidden {
			t.Errorf("%q: class %q (%v), want Forbidden", text, got, err)
		}
	}
}

func TestPrintfBounds(t *testing.T) {
	data := testData(1)
	for _, f := range []string{`%0999999999d`, `%*d`, `%.*d`, `%4097s`, `%.5000f`, `%[5000]d`, `%1[1]*d`} {
		text := `{{printf "` + f + `" 1 2}}`
		_, err := Render(text, data, Limits{})
		if got := classOf(t, err); got != ClassForbidden {
			t.Errorf("%s: class %q (%v), want Forbidden", text, got, err)
		}
	}
	out, err := Render(`{{printf "%04096d|%.3f|%-5s|%%|%[1]d" 7 3.14159 "ab"}}`, data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("0", 4095) + "7|3.142|ab   |%|7"
	if out != want {
		t.Errorf("printf = %q...(%d bytes), want %q...(%d bytes)", out[4090:], len(out), want[4090:], len(want))
	}
	// Many verbs each within the width limit are refused by the values
	// budget before fmt builds them: 1000 * 8 KiB > 4 * 1 MiB.
	many := `{{printf "` + strings.Repeat("%4096.4096f", 1000) + `" ` + strings.Repeat("1.0 ", 1000) + `}}`
	if _, err := Render(many, data, Limits{}); classOf(t, err) != ClassTooComplex {
		t.Errorf("1000 wide verbs: %v, want TooComplex", err)
	}
}

func TestOutputTooLarge(t *testing.T) {
	// 20^3 * 3.4 KB = 27 MB if it ran to the end: 8k iterations pass the
	// step bound, the output bound stops it.
	text := nested(3, "{{range $.Labels}}", strings.Repeat("#", 3400))
	out, err := Render(text, testData(20), Limits{})
	if got := classOf(t, err); got != ClassOutputTooLarge {
		t.Fatalf("27 MB output: class %q (%v), want OutputTooLarge", got, err)
	}
	if out != "" {
		t.Errorf("output returned with the error: %d bytes", len(out))
	}
	// Paperspace: 16 KiB. One byte under passes, one over fails.
	lim := Limits{MaxBytes: 16 << 10}
	if out, err := Render(strings.Repeat("a", 16<<10), testData(0), lim); err != nil || len(out) != 16<<10 {
		t.Errorf("16 KiB into 16 KiB: %d bytes, %v", len(out), err)
	}
	if _, err := Render(strings.Repeat("a", 16<<10)+"{{.NodeName}}", testData(0), lim); classOf(t, err) != ClassOutputTooLarge {
		t.Errorf("16 KiB + a name into 16 KiB: %v, want OutputTooLarge", err)
	}
}

func TestValueBudget(t *testing.T) {
	data := testData(1)
	for name, text := range map[string]string{
		"printf doubling":   `{{$x := "0123456789abcdef"}}` + strings.Repeat(`{{$x = printf "%s%s" $x $x}}`, 40) + `{{len $x}}`,
		"print doubling":    `{{$x := "0123456789abcdef"}}` + strings.Repeat(`{{$x = print $x $x}}`, 40) + `{{len $x}}`,
		"js backslashes":    `{{$x := "\\\\\\\\"}}` + strings.Repeat(`{{$x = js $x}}`, 60) + `{{len $x}}`,
		"urlquery percents": `{{$x := "%%%%"}}` + strings.Repeat(`{{$x = urlquery $x $x}}`, 60) + `{{len $x}}`,
		"html ampersands":   `{{$x := "&&&&"}}` + strings.Repeat(`{{$x = html $x $x}}`, 60) + `{{len $x}}`,
		"yaml quotes":       `{{$x := "\"\"\"\""}}` + strings.Repeat(`{{$x = yaml $x}}`, 60) + `{{len $x}}`,
		"shell quotes":      `{{$x := "''''"}}` + strings.Repeat(`{{$x = shell $x}}`, 60) + `{{len $x}}`,
		"kept in variables": `{{$a := "0123456789abcdef"}}` + strings.Repeat(`{{$a := printf "%s%s%s%s" $a $a $a $a}}`, 30),
		"indexed printf":    `{{$x := printf "%01000d" 0}}{{$y := printf "` + strings.Repeat("%[1]s", 5000) + `" $x}}`,
	} {
		out, err := Render(text, data, Limits{})
		if got := classOf(t, err); got != ClassTooComplex {
			t.Errorf("%s: class %q (%v, %d bytes out), want TooComplex", name, got, err, len(out))
		}
	}
}

func TestTimeout(t *testing.T) {
	if _, err := Render("{{.NodeName}}", testData(1), Limits{Timeout: time.Nanosecond}); classOf(t, err) != ClassTimeout {
		t.Fatalf("1ns: %v, want Timeout", err)
	}
	// Comparisons cost the length of what they compare: 20^4 comparisons
	// of two 512 KiB strings equal but for their last byte (40 GB of
	// memory compared) stop at the deadline.
	text := `{{$a := "0123456789abcdef"}}` + strings.Repeat(`{{$a = printf "%s%s" $a $a}}`, 15) +
		`{{$b := printf "%s!" (slice $a 0 (len (slice $a 1)))}}` +
		nested(4, "{{range $.Labels}}", "{{if eq $a $b}}same{{end}}")
	start := time.Now()
	_, err := Render(text, testData(20), Limits{MaxSteps: 10_000_000, Timeout: 100 * time.Millisecond})
	if got := classOf(t, err); got != ClassTimeout {
		t.Fatalf("comparison burn: class %q (%v), want Timeout", got, err)
	}
	t.Logf("comparison burn stopped after %v: %v", time.Since(start), err)
}

func TestPrescanBounds(t *testing.T) {
	data := testData(1)
	for _, tc := range []struct {
		name, text, class string
	}{
		{"100 nested ifs", nested(100, "{{if 1}}", "x"), ""},
		{"101 nested ifs", nested(101, "{{if 1}}", "x"), ClassTooComplex},
		{"101 unclosed ifs", strings.Repeat("{{if 1}}", 101), ClassTooComplex},
		{"trimmed", nested(101, "{{- if 1 -}}\n", "x"), ClassTooComplex},
		{"else-if chain", "{{if 0}}" + strings.Repeat("{{else if 0}}", 100) + "{{end}}", ClassTooComplex},
		{"else-if chain 99", strings.Repeat("{{if 0}}"+strings.Repeat("{{else if 0}}", 98)+"{{end}}", 20), ""},
		{"parens", "{{" + strings.Repeat("(", 101) + "1" + strings.Repeat(")", 101) + "}}", ClassTooComplex},
		{"parens 100", "{{" + strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100) + "}}", ""},
		{"quoted delimiters", `{{ "}}" }}` + nested(101, `{{if "}}{{"}}`, "x"), ClassTooComplex},
		{"comments do not nest", strings.Repeat("{{/* {{if 1}} */}}", 200), ""},
		{"action code", strings.Repeat("{{1}}", 7000), ClassTooComplex},
		{"text is cheap", strings.Repeat("x", 1<<19) + "{{1}}", ClassOutputTooLarge},
		{"text too large", strings.Repeat("x", MaxTemplateBytes+1), ClassTemplateTooLarge},
		{"65 variables", strings.Repeat("{{$a := 1}}", 63) + "{{range $k, $v := .Labels}}{{end}}{{$a = 2}}", ClassTooComplex},
		{"64 variables", strings.Repeat("{{$a := 1}}", 62) + "{{range $k, $v := .Labels}}{{end}}{{$a = 2}}", ""},
	} {
		_, err := Render(tc.text, data, Limits{MaxBytes: 1 << 18})
		if got := classOf(t, err); got != tc.class {
			t.Errorf("%s: class %q (%v), want %q", tc.name, got, err, tc.class)
		}
	}
}

func TestRendersTemplate(t *testing.T) {
	data := testData(3)
	data.Labels["team"] = "a b'c"
	text := `#!/bin/sh
{{- range $k, $v := .Labels}}
label {{$k}}={{$v}}
{{- end}}
{{- range $i, $t := .Taints}}
taint {{$i}} {{.Key}}={{.Value}}:{{.Effect}}{{if eq .Effect "NoExecute"}} (evicts){{end}}
{{- end}}
{{with .Labels}}{{len .}} labels, l01={{index . "example.com/l01"}}{{end}}
{{if and .Taints (gt (len .Taints) 1)}}tainted{{else}}clean{{end}}
name: {{yaml .NodeName}} team: {{shell (index .Labels "team")}} {{printf "%s/%s" .RequestNamespace .RequestName | html}}
{{.Provider}} {{.Region}} {{println "end"}}`
	want := `#!/bin/sh
label example.com/l00=v00
label example.com/l01=v01
label example.com/l02=v02
label team=a b'c
taint 0 nvidia.com/gpu=true:NoSchedule
taint 1 example.com/dedicated=:NoExecute (evicts)
4 labels, l01=v01
tainted
name: "tgp-6f1c-1" team: 'a b'\''c' team-a/train
lambda us-east-1 end
`
	out, err := Render(text, data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if out != want {
		t.Errorf("render:\n%s\nwant:\n%s", out, want)
	}
}

// The comparisons and index are ported from text/template: they must
// give its answers.
func TestFuncsMatchTextTemplate(t *testing.T) {
	data := testData(3)
	for _, expr := range []string{
		`eq 1 1`, `eq 1 2 3 1`, `eq "a" "a"`, `eq .NodeName "x" "tgp-6f1c-1"`, `eq 1.5 1.5`, `eq true false`,
		`eq 1 "a"`, `eq .Labels .Labels`, `eq nil nil`, `eq .Taints nil`, `eq (index .Taints 0) (index .Taints 0)`,
		`eq (index .Taints 0).Effect "NoSchedule"`, `eq 1`, `ne 1 2`, `ne "a" "a"`,
		`lt 1 2`, `lt 2 1`, `lt "a" "b"`, `lt 1.5 2.5`, `lt true false`, `lt 1 "a"`, `le 2 2`, `le 3 2`,
		`gt 3 2`, `gt "a" "b"`, `ge 2 2`, `ge 1 2`, `lt (len .Labels) 5`, `eq (len .Labels) 3`,
		`index .Labels "example.com/l02"`, `index .Labels "none"`, `index .Taints 1`, `index .Taints 2`,
		`index .Taints 5`, `index .Taints -1`, `index .NodeName 0`, `index .Taints 0 "x"`, `index .Labels 1`,
		`index nil 1`, `index .Labels`, `(index .Taints 1).Key`, `index "abc" 3`,
		`print 1 2 "a" "b" .Labels`, `println .Taints`, `printf "%v %q %x" .Labels .NodeName .Region`,
		`html "<a href='x'>&</a>"`, `js "</script>\\'"`, `urlquery "a b&c=d/é"`, `html 1 "<"`,
	} {
		text := "{{" + expr + "}}"
		want, werr := plainRender(text, data)
		got, gerr := Render(text, data, Limits{})
		if (werr != nil) != (gerr != nil) || got != want {
			t.Errorf("%s: got %q, %v; text/template %q, %v", text, got, gerr, want, werr)
		}
	}
}

func TestAnalyzeCost(t *testing.T) {
	for _, tc := range []struct {
		text           string
		labels, taints int
		want           int
	}{
		{"text", 0, 0, 1},
		{"{{.NodeName}}", 0, 0, 4},                   // action, pipe, command, field
		{"{{range .Labels}}x{{end}}", 5, 0, 4 + 5*2}, // range, pipe, command, field; 5 x (iteration, text)
		{"{{range .Labels}}{{range $.Taints}}x{{end}}{{end}}", 3, 2, 4 + 3*(1+4+2*2)},
		{"{{if .Labels}}{{.NodeName}}{{else}}x{{end}}", 0, 0, 4 + 4}, // if, pipe, command, field; costlier branch
		{"{{with .Taints}}{{range .}}x{{end}}{{end}}", 0, 7, 4 + 4 + 7*2},
	} {
		tree, err := parseTree(tc.text)
		if err != nil {
			t.Fatal(err)
		}
		data := testData(tc.labels)
		data.Taints = make([]tgpv1.NodeTaint, tc.taints)
		if got, err := analyze(tree, tc.text, data, 1000); err != nil || got != tc.want {
			t.Errorf("%q with %d labels, %d taints: cost %d, %v; want %d", tc.text, tc.labels, tc.taints, got, err, tc.want)
		}
	}
}

func TestLimits(t *testing.T) {
	if got := (Limits{}).withDefaults(); got != (Limits{MaxBytes: DefaultMaxBytes, MaxSteps: DefaultMaxSteps, Timeout: DefaultTimeout}) {
		t.Errorf("defaults = %+v", got)
	}
	if got := (Limits{MaxBytes: -1, MaxSteps: -1, Timeout: -1}).withDefaults(); got != (Limits{MaxBytes: DefaultMaxBytes, MaxSteps: DefaultMaxSteps, Timeout: DefaultTimeout}) {
		t.Errorf("negative = %+v", got)
	}
	// Limits far too large are capped: the bounds stay on.
	huge := Limits{MaxBytes: math.MaxInt, MaxSteps: math.MaxInt, Timeout: math.MaxInt64}
	if got := huge.withDefaults(); got != (Limits{MaxBytes: MaxMaxBytes, MaxSteps: MaxMaxSteps, Timeout: MaxTimeout}) {
		t.Errorf("huge = %+v", got)
	}
	if out, err := Render(`{{printf "%s-%d" .NodeName 1}}`, testData(1), huge); err != nil || out != "tgp-6f1c-1-1" {
		t.Errorf("huge limits: %q, %v", out, err)
	}
	if _, err := Render(nested(8, "{{range $.Labels}}", "x"), testData(20), huge); classOf(t, err) != ClassTooComplex {
		t.Errorf("huge limits, bomb: %v, want TooComplex", err)
	}
}

// Render shares no state between calls (run with -race).
func TestConcurrentRenders(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			data := testData(i)
			want, _ := plainRender(DefaultTemplate, data)
			for range 20 {
				if out, err := Render(DefaultTemplate, data, Limits{}); err != nil || out != want {
					t.Errorf("concurrent render: %q, %v", out, err)
				}
				if _, err := Render(nested(8, "{{range $.Labels}}", "x"), testData(20), Limits{}); err == nil {
					t.Error("concurrent bomb rendered")
				}
			}
		})
	}
	wg.Wait()
}

// .Values are the valuesFrom Secret's keys: read by name, never ranged
// over, and a missing key is an error that quotes neither the template nor
// any value.
func TestValues(t *testing.T) {
	data := testData(1)
	data.Values = map[string]string{"authkey": "tskey-auth-s3cret", "k3s-token": "K10abc"}
	out, err := Render(`tailscale up --authkey={{ .Values.authkey }} && k3s agent --token={{ index .Values "k3s-token" }}`, data, Limits{})
	if err != nil || out != "tailscale up --authkey=tskey-auth-s3cret && k3s agent --token=K10abc" {
		t.Fatalf("Render = %q, %v", out, err)
	}
	_, err = Render(`{{ .Values.missing }}`, data, Limits{})
	if err == nil {
		t.Fatal("a key the Secret lacks rendered")
	}
	for _, leak := range []string{"tskey", "K10abc", "missing"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error %q quotes %q", err, leak)
		}
	}
}
