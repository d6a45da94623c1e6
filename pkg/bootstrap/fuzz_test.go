package bootstrap

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var classes = []string{
	ClassParse, ClassUndefinedFunction, ClassExec, ClassOutputTooLarge, ClassTooComplex,
	ClassTemplateTooLarge, ClassForbidden, ClassTimeout,
}

// errorForm is every Error's text: a line, a class and a sentence of
// letters, digits and punctuation that the package's sentences use.
var errorForm = regexp.MustCompile(`^bootstrap template( line [1-9][0-9]*)?: [A-Za-z]+: [A-Za-z0-9 ,.;:()$'/*^-]+$`)

func FuzzRender(f *testing.F) {
	for _, s := range []string{
		DefaultTemplate,
		"#cloud-config\nhostname: {{ .NodeName }}\n",
		`{{range $k, $v := .Labels}}{{$k}}={{$v | shell}}{{end}}`,
		`{{range .Taints}}{{.Key}}={{.Value}}:{{.Effect}}{{end}}`,
		`{{with .Labels}}{{range .}}{{.}}{{end}}{{else}}none{{end}}`,
		`{{if eq .Provider "lambda"}}{{printf "%q %5.2f %x" .Region 3.14159 .NodeName}}{{end}}`,
		`{{index .Labels "example.com/l01"}} {{len .Taints}} {{slice .NodeName 1 3}} {{not true}} {{and 1 0}} {{or 0 1}}`,
		`{{html "<&>"}} {{js "'\\"}} {{urlquery "a b"}} {{yaml "a\nb"}} {{print 1 2}} {{println "x"}}`,
		`{{$x := 1}}{{$x = 2}}{{$x}}{{range $i, $t := $.Taints}}{{if $i}},{{end}}{{$t.Key}}{{break}}{{end}}`,
		nested(8, "{{range $.Labels}}", "x"),
		`{{range 100000000000}}x{{end}}`,
		`{{define "a"}}{{template "a"}}{{end}}{{template "a"}}`,
		`{{printf "%0999999999d" 1}}`, `{{printf "%*d" 1000000 1}}`,
		`{{$x := "aaaaaaaaaaaaaaaa"}}` + strings.Repeat(`{{$x = printf "%s%s" $x $x}}`, 12),
		`{{ SECRET-MARKER-123 }}`, "line\n{{ .Labels.SECRET_MARKER }}", `{{ "unterminated }}`,
		`{{/* comment }} */}}{{- .NodeName -}}`, "{{`raw }} string`}}", `{{'}'}}`,
		`{{$ := 1}}`, `{{call .NodeName}}`, `{{(((1)))}}`, `{{.Taints.Nope}}`, `{{index .Taints 9}}`,
	} {
		f.Add(s)
	}
	data := testData(4)
	lim := Limits{MaxBytes: 4096, MaxSteps: 20_000, Timeout: time.Second}
	f.Fuzz(func(t *testing.T, text string) {
		checkScan(t, text)
		out, err := Render(text, data, lim)
		if len(out) > lim.MaxBytes {
			t.Fatalf("output of %d bytes, over MaxBytes %d", len(out), lim.MaxBytes)
		}
		if err == nil {
			// Within the bounds Render must agree with text/template.
			want, perr := plainRender(text, data)
			if perr != nil || want != out {
				t.Fatalf("Render = %q; text/template = %q, %v", out, want, perr)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %T is not an *Error: %v", err, err)
		}
		if !slices.Contains(classes, e.Class) {
			t.Fatalf("class %q (a panic was recovered, or an unknown class): %v", e.Class, err)
		}
		if out != "" {
			t.Fatalf("output returned with an error: %q, %v", out, err)
		}
		msg := err.Error()
		if len(text) > 8 && strings.Contains(msg, text) {
			t.Fatalf("error %q contains the template", msg)
		}
		if !errorForm.MatchString(msg) {
			t.Fatalf("error %q is not of the fixed form", msg)
		}
		if e.Line > strings.Count(text, "\n")+1 {
			t.Fatalf("error line %d, past the template's %d lines", e.Line, strings.Count(text, "\n")+1)
		}
	})
}
