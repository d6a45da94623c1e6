package bootstrap

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const marker = "SECRET-MARKER-123"

// Each template fails next to text from the Secret. text/template's own
// error quotes it (leaks says so, and is checked, so the test shows what
// it prevents); Render's must not.
func TestErrorsQuoteNoTemplateText(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		class      string
		line       int
		leaks      string // what text/template's error quotes of the template
	}{
		{"undefined function", "#cloud-config\nkey: x\nrun: {{ SECRET_MARKER_123 \"p4ss\" }}\n", ClassUndefinedFunction, 3, "SECRET"},
		{"undefined function arg", "a\n\n\nb {{ decrypt \"SECRET-MARKER-123\" }}", ClassUndefinedFunction, 4, "decrypt"},
		{"unclosed string", "a\nb {{ \"SECRET-MARKER-123 }}\n", ClassParse, 2, ""},
		{"unclosed if", "{{if .NodeName}}\nSECRET-MARKER-123 {{ \"SECRET-MARKER-123\" }}", ClassParse, 2, ""},
		{"not a command", "x\n{{ .NodeName | \"SECRET-MARKER-123\" }}", ClassParse, 2, ""},
		{"unexpected", "x\n{{ end \"SECRET-MARKER-123\" }}", ClassParse, 2, "SECRET"},
		{"undefined variable", "\n{{ $SECRET_MARKER_123 }}", ClassParse, 2, "SECRET"},
		{"bad number", "{{ 0xSECRET_MARKER_123 }}", ClassParse, 1, "0xS"},
		{"missing key", "one\ntwo\n{{ .Labels.SECRET_MARKER_123 }}", ClassExec, 3, "SECRET"},
		{"missing field", "{{ .NodeName }}\n{{ .SECRET_MARKER_123 }}", ClassExec, 2, "SECRET"},
		{"field of a string", "\n\n{{ .NodeName.SECRET_MARKER_123 }}", ClassExec, 3, "SECRET"},
		{"wrong args", "{{ slice \"SECRET-MARKER-123\" 1 2 3 }}", ClassExec, 1, "SECRET"},
		{"compare types", "\n{{ lt \"SECRET-MARKER-123\" 1 }}", ClassExec, 2, "SECRET"},
		{"index type", "{{ index .Taints \"SECRET-MARKER-123\" }}", ClassExec, 1, "SECRET"},
		{"template name", "{{ template \"SECRET-MARKER-123\" }}", ClassForbidden, 1, "SECRET"},
		{"range", "\n{{ range \"SECRET-MARKER-123\" }}{{ end }}", ClassForbidden, 2, "SECRET"},
		{"printf width", "\n\n{{ printf \"%09999dSECRET-MARKER-123\" 1 }}", ClassForbidden, 3, ""},
		{"nesting", strings.Repeat("{{if \"SECRET-MARKER-123\"}}", 101), ClassTooComplex, 1, ""},
	} {
		_, err := Render(tc.text, testData(2), Limits{})
		if got := classOf(t, err); got != tc.class {
			t.Errorf("%s: class %q (%v), want %q", tc.name, got, err, tc.class)
			continue
		}
		msg := err.Error()
		for _, secret := range []string{marker, "SECRET", "p4ss", "decrypt"} {
			if strings.Contains(msg, secret) {
				t.Errorf("%s: error %q contains %q from the template", tc.name, msg, secret)
			}
		}
		if want := fmt.Sprintf("bootstrap template line %d: %s: ", tc.line, tc.class); !strings.HasPrefix(msg, want) {
			t.Errorf("%s: error %q, want it to begin %q", tc.name, msg, want)
		}
		if _, perr := plainRender(tc.text, testData(2)); tc.leaks != "" && (perr == nil || !strings.Contains(perr.Error(), tc.leaks)) {
			t.Errorf("%s: text/template's error %v does not quote the template: the case tests nothing", tc.name, perr)
		}
	}
}

func TestErrorForms(t *testing.T) {
	_, err := Render("a\n{{nope}}", testData(0), Limits{})
	var e *Error
	if !errors.As(fmt.Errorf("rendering: %w", err), &e) {
		t.Fatalf("errors.As through a wrap: %v", err)
	}
	if e.Line != 2 || e.Class != ClassUndefinedFunction {
		t.Errorf("Error = %+v, want line 2, UndefinedFunction", e)
	}
	if got, want := (&Error{Class: ClassTimeout, detail: detailTimeout}).Error(), "bootstrap template: Timeout: "+detailTimeout; got != want {
		t.Errorf("without a line: %q, want %q", got, want)
	}
	if got, want := e.Error(), "bootstrap template line 2: UndefinedFunction: "+detailUndefFunc; got != want {
		t.Errorf("with a line: %q, want %q", got, want)
	}
}
