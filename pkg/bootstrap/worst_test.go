package bootstrap

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// worst are the most expensive templates found for each bound, with the
// class each must end in.
var worst = []struct {
	name, text string
	class      string // with MaxBytes 1 MiB
	small      string // with MaxBytes 16 KiB, when not class
}{
	{"8 nested ranges", nested(8, "{{range $.Labels}}", "{{.}}"), ClassTooComplex, ""},
	{"27 MB output", nested(3, "{{range $.Labels}}", strings.Repeat("#", 3400)), ClassOutputTooLarge, ""},
	{"wide verbs in a loop", nested(3, "{{range $.Labels}}", `{{printf "%4096d" 1}}`), ClassOutputTooLarge, ""},
	{"printf doubling", `{{$x := "0123456789abcdef"}}` + strings.Repeat(`{{$x = printf "%s%s" $x $x}}`, 40), ClassTooComplex, ""},
	{"values kept in variables", `{{$a := "0123456789abcdef"}}` + strings.Repeat(`{{$a := printf "%s%s%s%s" $a $a $a $a}}`, 30), ClassTooComplex, ""},
	{"quoting doubling", `{{$x := "\\\\\\\\"}}` + strings.Repeat(`{{$x = printf "%q" $x}}`, 40), ClassTooComplex, ""},
	{"js doubling", `{{$x := "\\\\\\\\"}}` + strings.Repeat(`{{$x = js $x}}`, 60), ClassTooComplex, ""},
	{"indexed printf", `{{$x := printf "%01000d" 0}}{{$y := printf "` + strings.Repeat("%[1]s", 5000) + `" $x}}`, ClassTooComplex, ""},
	{"print the data 10k times", "{{print " + strings.Repeat(". ", 10_000) + "}}", ClassTooComplex, ""},
	{"32 KiB of actions", strings.Repeat("{{1}}", maxActionBytes/5), "", ""},
	{"32 KiB of arguments", "{{print " + strings.Repeat("1 ", maxActionBytes/2-8) + "}}", "", ClassTooComplex},
	{"100 nested ifs", nested(100, "{{if 1}}", "x"), "", ""},
	// Each lookup of $v000 walks back through the 63 declared after it.
	{"variable lookups", variables(maxVariables) + nested(3, "{{range $.Labels}}", "{{if and $v000 $v000 $v000 $v000 $v000 $v000}}{{end}}"), "", ""},
	{"1 MiB of text", strings.Repeat("x", MaxTemplateBytes-8) + "{{1}}", "", ClassOutputTooLarge},
	{"range over an int", "{{range 100000000000}}{{printf \"%4096d\" 1}}{{end}}", ClassForbidden, ""},
}

func variables(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{{$v%03d := 1}}", i)
	}
	return b.String()
}

// allocated is the heap allocated by one Render of text.
func allocated(text string, data Data, lim Limits) (uint64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Render(text, data, lim)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// TestMemoryBounded measures the heap allocated (all of it, freed or
// not) by the worst templates. The bound: the parser's allocation, at
// most 120 bytes per byte of action code (of which there are at most
// 32 KiB), a copy of the text, and 6 × MaxBytes: 2 × of values, which fmt
// builds in a growing buffer and then copies, and the output, which grows
// by doubling.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocation of large renders")
	}
	data := testData(20)
	for _, maxBytes := range []int{16 << 10, DefaultMaxBytes} {
		lim := Limits{MaxBytes: maxBytes}
		for _, w := range worst {
			bound := uint64(120*maxActionBytes + len(w.text) + 6*maxBytes)
			start := time.Now()
			n, err := allocated(w.text, data, lim)
			took := time.Since(start)
			class, want := classOf(t, err), w.class
			if maxBytes < DefaultMaxBytes && w.small != "" {
				want = w.small
			}
			if class != want {
				t.Errorf("%s, MaxBytes %d: class %q (%v), want %q", w.name, maxBytes, class, err, want)
			}
			t.Logf("MaxBytes %7d: %-26s %7.2f MiB in %8v (%s)", maxBytes, w.name, float64(n)/(1<<20), took.Round(time.Microsecond), class)
			if n > bound {
				t.Errorf("%s, MaxBytes %d: allocated %d bytes, over %d", w.name, maxBytes, n, bound)
			}
		}
	}
}

func BenchmarkWorst(b *testing.B) {
	data := testData(20)
	for _, w := range worst {
		b.Run(strings.ReplaceAll(w.name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Render(w.text, data, Limits{})
			}
		})
	}
}
