package bootstrap

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The classes of Error. A class names what the tenant must change; it is
// safe to put in a condition reason, an Event or a metric label.
const (
	// ClassParse: the text is not a Go template.
	ClassParse = "ParseError"
	// ClassUndefinedFunction: the template calls a function that does not exist.
	ClassUndefinedFunction = "UndefinedFunction"
	// ClassExec: the template failed while rendering (a missing field or map
	// key, an argument of the wrong type, a failing comparison).
	ClassExec = "ExecError"
	// ClassOutputTooLarge: the rendered user data is over Limits.MaxBytes.
	ClassOutputTooLarge = "OutputTooLarge"
	// ClassTooComplex: the template may take more than Limits.MaxSteps
	// evaluations, nests too deeply, has too much template code, or its
	// functions build more text than the render allows.
	ClassTooComplex = "TooComplex"
	// ClassTemplateTooLarge: the template text is over MaxTemplateBytes.
	ClassTemplateTooLarge = "TemplateTooLarge"
	// ClassForbidden: the template uses a construct the operator refuses
	// (define, block, template, call, range over anything but .Labels and
	// .Taints, redefining $, a printf width or precision over MaxFormatWidth).
	ClassForbidden = "Forbidden"
	// ClassTimeout: rendering took longer than Limits.Timeout.
	ClassTimeout = "Timeout"
	// ClassInternal: the renderer failed (a bug in this package).
	ClassInternal = "Internal"
)

// Error is every error Render returns. Its text is built only from the
// line number, the class and a sentence of this package: it never quotes
// the template, a token of it (a field, a function or variable name, a
// string), or a value of the data, so it may go to status, Events and logs
// even when the template came from a Secret.
//
// Use errors.As to get it:
//
//	var berr *bootstrap.Error
//	if errors.As(err, &berr) && berr.Class == bootstrap.ClassOutputTooLarge { ... }
type Error struct {
	// Line is the 1-based line of the template where the error was found,
	// or 0 when no line is known (output and time limits hit while writing).
	Line int
	// Class is one of the Class constants.
	Class string

	// detail is a sentence fixed by this package, with at most a limit's
	// number in it; never text from the template or the data.
	detail string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("bootstrap template line %d: %s: %s", e.Line, e.Class, e.detail)
	}
	return fmt.Sprintf("bootstrap template: %s: %s", e.Class, e.detail)
}

func newError(class, detail string) *Error { return &Error{Class: class, detail: detail} }

func (e *Error) at(line int) *Error {
	c := *e
	c.Line = line
	return &c
}

// Fixed explanations. None may contain the left delimiter: a template
// that errors always contains one, so an error can never contain the
// whole template (FuzzRender checks that).
const (
	detailParse      = "the text is not a valid Go template"
	detailUnclosed   = "an action, string, comment or control structure is not closed"
	detailUnexpected = "unexpected token in an action"
	detailUndefVar   = "a variable is used where it is not declared"
	detailUndefFunc  = "the template calls a function that does not exist; the functions are " +
		"and, or, not, len, index, slice, eq, ne, lt, le, gt, ge, print, printf, println, html, js, urlquery, yaml and shell"
	detailExec          = "the template failed while rendering"
	detailMissingKey    = "a map has no entry for a key the template reads"
	detailNoField       = "the template reads a field that does not exist (the fields are .NodeName, .RequestName, .RequestNamespace, .Provider, .Region, .Labels, .Taints, .KubeletLabels and .KubeletTaints; a taint has .Key, .Value and .Effect)"
	detailArgs          = "a function is called with the wrong number or type of arguments"
	detailCompare       = "values of types that cannot be compared are compared"
	detailIndex         = "an index is out of range or of the wrong type"
	detailNil           = "the template uses a nil value"
	detailDefine        = "define, block and template actions are not allowed (one template per Secret, no recursion)"
	detailCall          = "the call function is not allowed"
	detailRange         = "range is allowed only over .Labels and .Taints (or $.Labels and $.Taints, or . inside a with of one of them)"
	detailDollar        = "the variable $ cannot be declared or assigned"
	detailNode          = "the template uses an action this renderer does not support"
	detailFormatStar    = "printf widths and precisions given as * are not allowed"
	detailFormatWidth   = "a printf width, precision or argument index is over 4096"
	detailTimeout       = "rendering took longer than the time limit"
	detailInternal      = "the renderer failed unexpectedly"
	detailDepth         = "control structures or parentheses are nested more than 100 deep"
	detailCode          = "the template has more than 32768 bytes of template actions"
	detailVariables     = "the template declares more than 64 variables"
	detailTextSizeFmt   = "the template text is over %d bytes"
	detailOutputFmt     = "the rendered user data is over %d bytes, the provider's limit"
	detailStepsFmt      = "the template may take more than %d evaluations with these labels and taints (a range runs its body once per label or taint)"
	detailValueBytesFmt = "the template's functions built more than %d bytes of text"
)

// location matches the position text/template puts first in its errors:
// "template: bootstrap:LINE: ..." (parse) or "template: bootstrap:LINE:COL: ..." (exec).
var location = regexp.MustCompile(`^template: ` + name + `:(\d+)`)

func lineOf(msg string) int {
	m := location.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0
	}
	return n
}

// parseError turns an error of text/template/parse into an Error. The
// message is read for its line and its kind only.
func parseError(err error) *Error {
	msg := err.Error()
	var e *Error
	switch {
	case strings.Contains(msg, "function ") && strings.HasSuffix(msg, " not defined"):
		e = newError(ClassUndefinedFunction, detailUndefFunc)
	case strings.Contains(msg, "undefined variable"):
		e = newError(ClassParse, detailUndefVar)
	case strings.Contains(msg, "unexpected EOF"), strings.Contains(msg, "unclosed"),
		strings.Contains(msg, "unterminated"), strings.Contains(msg, "missing end"),
		strings.Contains(msg, "comment ends before closing delimiter"):
		e = newError(ClassParse, detailUnclosed)
	case strings.Contains(msg, "unexpected"):
		e = newError(ClassParse, detailUnexpected)
	case strings.Contains(msg, "multiple definition"), strings.Contains(msg, "redefinition"):
		e = newError(ClassForbidden, detailDefine)
	default:
		e = newError(ClassParse, detailParse)
	}
	return e.at(lineOf(msg))
}

// execError turns an error of (*template.Template).Execute into an Error:
// the renderer's own errors keep their class, text/template's get one from
// a fixed list.
func execError(err error) *Error {
	msg := err.Error()
	var own *Error
	if errors.As(err, &own) {
		return own.at(lineOf(msg))
	}
	detail := detailExec
	switch {
	case strings.Contains(msg, "map has no entry for key"):
		detail = detailMissingKey
	case strings.Contains(msg, "can't evaluate field"), strings.Contains(msg, "is not a method"),
		strings.Contains(msg, "is not a field"):
		detail = detailNoField
	case strings.Contains(msg, "wrong number of args"), strings.Contains(msg, "wrong type for value"),
		strings.Contains(msg, "can't give argument"), strings.Contains(msg, "can't call method"):
		detail = detailArgs
	case strings.Contains(msg, "comparison"), strings.Contains(msg, "comparable"):
		detail = detailCompare
	case strings.Contains(msg, "index"), strings.Contains(msg, "slice"):
		detail = detailIndex
	case strings.Contains(msg, "nil"):
		detail = detailNil
	}
	return newError(ClassExec, detail).at(lineOf(msg))
}
