package bootstrap

import (
	"fmt"
	"text/template"
	"time"
)

// Defaults for the zero fields of Limits.
const (
	DefaultMaxBytes = 1 << 20
	DefaultMaxSteps = 100_000
	DefaultTimeout  = time.Second
)

// Caps on Limits: a caller's mistake (math.MaxInt) must not turn the
// bounds off.
const (
	MaxMaxBytes = 64 << 20
	MaxMaxSteps = 10_000_000 // about 3 s of rendering
	MaxTimeout  = time.Minute
)

// Limits bound one Render. A zero or negative field takes its default; a
// field over its cap (MaxMaxBytes, MaxMaxSteps, MaxTimeout) takes the cap.
type Limits struct {
	// MaxBytes is the largest output: the provider's user-data limit
	// (Lambda 1 MiB, Paperspace 16 KiB). The functions of a render may
	// build 2 × MaxBytes in all.
	MaxBytes int
	// MaxSteps bounds the template's worst-case number of node evaluations,
	// computed before it runs with the lengths of the data's Labels and
	// Taints.
	MaxSteps int
	// Timeout is a backstop: the output writer and the functions fail
	// once it has passed.
	Timeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = DefaultMaxSteps
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	l.MaxBytes = min(l.MaxBytes, MaxMaxBytes)
	l.MaxSteps = min(l.MaxSteps, MaxMaxSteps)
	l.Timeout = min(l.Timeout, MaxTimeout)
	return l
}

// Render renders the bootstrap template text for data within lim. Every
// error it returns is an *Error, whose text quotes nothing of text or data.
func Render(text string, data Data, lim Limits) (out string, err error) {
	lim = lim.withDefaults()
	r := &renderer{
		deadline: time.Now().Add(lim.Timeout),
		maxBytes: lim.MaxBytes,
		total:    valueBudgetFactor * lim.MaxBytes,
	}
	r.budget = r.total
	defer func() {
		// text/template recovers the functions' panics; this is for the
		// parser, the executor and this package. A bad template must not
		// take the operator down.
		if p := recover(); p != nil {
			out, err = "", newError(ClassInternal, detailInternal)
		}
	}()
	if len(text) > MaxTemplateBytes {
		return "", newError(ClassTemplateTooLarge, fmt.Sprintf(detailTextSizeFmt, MaxTemplateBytes))
	}
	if e := prescan(text); e != nil {
		return "", e
	}
	tree, e := parseTree(text)
	if e != nil {
		return "", e
	}
	if _, e := analyze(tree, text, data, lim.MaxSteps); e != nil {
		return "", e
	}
	if err := r.check(); err != nil {
		return "", err
	}
	tmpl, err := template.New(name).Option("missingkey=error").Funcs(r.funcs()).AddParseTree(name, tree)
	if err != nil {
		return "", newError(ClassInternal, detailInternal)
	}
	if err := tmpl.Execute(r, data); err != nil {
		return "", execError(err)
	}
	return r.out.String(), nil
}
