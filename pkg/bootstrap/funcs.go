package bootstrap

import (
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"
)

// MaxFormatWidth is the largest width, precision or argument index a
// printf format may give (fmt itself allows 1e6 per verb).
const MaxFormatWidth = 4096

// valueBudgetFactor × Limits.MaxBytes is what the functions of one render
// may build in all (every result counts, also those only passed on to
// another function or kept in a variable). A template's values are
// normally written out, so MaxBytes of them is what a template can use;
// twice that leaves room for intermediate ones.
const valueBudgetFactor = 2

// renderer is the state of one Render: its output, its deadline and what
// its functions may still build.
type renderer struct {
	deadline time.Time
	maxBytes int
	total    int // valueBudgetFactor * maxBytes
	budget   int // bytes the functions may still build
	out      strings.Builder
}

// Write is the template's output: it fails, and text/template stops, once
// the output would pass maxBytes or the deadline has passed.
func (r *renderer) Write(p []byte) (int, error) {
	if err := r.check(); err != nil {
		return 0, err
	}
	if len(p) > r.maxBytes-r.out.Len() {
		return 0, newError(ClassOutputTooLarge, fmt.Sprintf(detailOutputFmt, r.maxBytes))
	}
	if r.out.Cap()-r.out.Len() < len(p) {
		// Grow doubles; Write alone grows large buffers by 1.25, which
		// allocates 5 times the output on the way to it.
		r.out.Grow(len(p))
	}
	return r.out.Write(p)
}

func (r *renderer) check() error {
	if time.Now().After(r.deadline) {
		return newError(ClassTimeout, detailTimeout)
	}
	return nil
}

// reserve fails when a result of up to n bytes could not be built.
func (r *renderer) reserve(n int) error {
	if n > r.budget {
		return newError(ClassTooComplex, fmt.Sprintf(detailValueBytesFmt, r.total))
	}
	return nil
}

func (r *renderer) charge(n int) { r.budget -= n }

// funcs are the template's functions. They replace the builtins whose
// work or allocation depends on their arguments' size (print, printf,
// println, html, js, urlquery, eq, ne, lt, le, gt, ge, index) with
// versions that check the deadline and bound what they build, refuse
// call, and add yaml and shell. and, or, not, len and slice stay
// text/template's: their cost does not depend on sizes.
func (r *renderer) funcs() template.FuncMap {
	return template.FuncMap{
		"print":    r.print,
		"println":  r.println,
		"printf":   r.printf,
		"html":     r.escaper(escapeWith(template.HTMLEscape), 5),
		"js":       r.escaper(escapeWith(template.JSEscape), 6),
		"urlquery": r.escaper(url.QueryEscape, 3),
		"yaml":     r.escaper(quoteYAML, 6),
		"shell":    r.escaper(quoteShell, 4),
		"call":     r.call,
		"eq":       r.eq,
		"ne":       r.ne,
		"lt":       r.lt,
		"le":       r.le,
		"gt":       r.gt,
		"ge":       r.ge,
		"index":    r.index,
	}
}

func (r *renderer) call(reflect.Value, ...reflect.Value) (reflect.Value, error) {
	return reflect.Value{}, newError(ClassForbidden, detailCall)
}

// size is an upper bound on what fmt prints for some values.
type size struct {
	str    int // bytes of strings: verbs like %q, % x expand them up to 6 times
	fixed  int // punctuation, type names, addresses
	ints   int // integers and booleans
	floats int // floats; a complex number counts two
	leaves int // values a width or precision pads, one by one
}

// bytes bounds what printf (any verb) or print (%v) makes of s, with
// mult bytes per string byte and pad bytes of width and precision per
// value. %b of an int64 prints 65 characters, %f of the largest float64
// 316; %v prints at most 20 and 24.
func (s size) bytes(printf bool, mult, pad int) int {
	intBytes, floatBytes := 21, 25
	if printf {
		intBytes, floatBytes = 72, 330
	}
	return mult*s.str + s.fixed + s.ints*intBytes + s.floats*floatBytes + s.leaves*(pad+8)
}

// measure adds to s an upper bound for v and its elements. It stops once
// the bound is over limit (the caller refuses then).
func (r *renderer) measure(v reflect.Value, depth int, s *size, limit int) {
	if s.bytes(true, 6, 0) > limit {
		return
	}
	s.leaves++
	if depth > 8 {
		s.fixed += limit + 1 // Data holds nothing this deep
		return
	}
	switch v.Kind() {
	case reflect.Invalid:
		s.fixed += 16
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		s.ints++
	case reflect.Float32, reflect.Float64:
		s.floats++
	case reflect.Complex64, reflect.Complex128:
		s.floats += 2
		s.fixed += 4
	case reflect.String:
		s.str += v.Len()
	case reflect.Pointer, reflect.Interface:
		s.fixed += 32
		if !v.IsNil() {
			r.measure(v.Elem(), depth+1, s, limit)
		}
	case reflect.Map:
		s.fixed += 2*len(v.Type().String()) + 8
		it := v.MapRange()
		for it.Next() {
			s.fixed += 4
			r.measure(it.Key(), depth+1, s, limit)
			r.measure(it.Value(), depth+1, s, limit)
		}
	case reflect.Slice, reflect.Array:
		s.fixed += 2*len(v.Type().String()) + 8
		for i := range v.Len() {
			s.fixed += 4
			r.measure(v.Index(i), depth+1, s, limit)
		}
	case reflect.Struct:
		t := v.Type()
		s.fixed += 2*len(t.String()) + 8
		for i := range v.NumField() {
			s.fixed += len(t.Field(i).Name) + 4
			r.measure(v.Field(i), depth+1, s, limit)
		}
	default: // func, chan, unsafe pointer: an address
		s.fixed += 32
	}
}

// argBytes bounds the bytes a verb prints for an argument (size.bytes):
// their sum and their largest. It checks the deadline as it goes, and
// stops once the sum is over the budget.
func (r *renderer) argBytes(args []any, printf bool, mult, pad int) (sum, largest int, err error) {
	for _, a := range args {
		if err := r.check(); err != nil {
			return 0, 0, err
		}
		var s size
		r.measure(reflect.ValueOf(a), 0, &s, r.budget)
		n := s.bytes(printf, mult, pad)
		largest = max(largest, n)
		if sum += n; sum > r.budget {
			return 0, 0, r.reserve(sum)
		}
	}
	return sum, largest, nil
}

// sprint is fmt.Sprint (the builtin print) within the budget.
func (r *renderer) sprint(args []any, sep int) (string, error) {
	n, _, err := r.argBytes(args, false, 1, 0)
	if err != nil {
		return "", err
	}
	if err := r.reserve(n + sep*len(args) + 16); err != nil {
		return "", err
	}
	var s string
	if sep == 0 {
		s = fmt.Sprint(args...)
	} else {
		s = fmt.Sprintln(args...)
	}
	r.charge(len(s))
	return s, nil
}

func (r *renderer) print(args ...any) (string, error) { return r.sprint(args, 0) }

func (r *renderer) println(args ...any) (string, error) { return r.sprint(args, 1) }

// printf is fmt.Sprintf with widths and precisions of at most
// MaxFormatWidth, no "*" (a width taken from an argument), and a result
// within the budget, known before it is built.
func (r *renderer) printf(format string, args ...any) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	verbs, pad, indexed, quotes, err := scanFormat(format)
	if err != nil {
		return "", err
	}
	mult := 1 // %v, %s, %d... print a string as it is
	if quotes {
		mult = 6 // %q, %x, %X and # quote or hex-encode it: at most 6 bytes a byte
	}
	sum, largest, err := r.argBytes(args, true, mult, pad)
	if err != nil {
		return "", err
	}
	// Without explicit indexes fmt prints each argument once (and the
	// extra ones after the text); with them a verb may print any.
	n := len(format) + verbs*(pad+64) + 64*len(args) + sum
	if indexed {
		if largest > 0 && verbs > r.budget/largest {
			return "", r.reserve(r.budget + 1)
		}
		n += verbs * largest
	}
	if err := r.reserve(n); err != nil {
		return "", err
	}
	s := fmt.Sprintf(format, args...)
	r.charge(len(s))
	return s, nil
}

// scanFormat counts the verbs of a printf format, finds the largest width
// plus precision of a verb, whether a verb has an argument index and
// whether one may expand a string (q, x, X, the # flag); it refuses "*"
// and numbers over MaxFormatWidth.
func scanFormat(f string) (verbs, pad int, indexed, quotes bool, err error) {
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		verbs++
		sum, num := 0, -1
		for i++; i < len(f) && strings.IndexByte("+-# 0123456789.[]*", f[i]) >= 0; i++ {
			switch c := f[i]; {
			case c == '*':
				return 0, 0, false, false, newError(ClassForbidden, detailFormatStar)
			case c == '[':
				indexed = true
			case c == '#':
				quotes = true
			case '0' <= c && c <= '9':
				if num < 0 {
					num = 0
				}
				if num = num*10 + int(c-'0'); num > MaxFormatWidth {
					return 0, 0, false, false, newError(ClassForbidden, detailFormatWidth)
				}
				continue
			}
			if num > 0 {
				sum += num
			}
			num = -1
		}
		if num > 0 {
			sum += num
		}
		pad = max(pad, sum)
		if i < len(f) && (f[i] == 'q' || f[i] == 'x' || f[i] == 'X') {
			quotes = true
		}
		// f[i] is the verb; the loop's i++ passes it (a multi-byte verb's
		// other bytes are never '%').
	}
	return verbs, pad, indexed, quotes, nil
}

// escaper wraps an escaping function that makes at most grow bytes of
// each input byte, applied to its arguments as text/template's html, js
// and urlquery are: one string as is, anything else through print.
func (r *renderer) escaper(esc func(string) string, grow int) func(...any) (string, error) {
	return func(args ...any) (string, error) {
		if err := r.check(); err != nil {
			return "", err
		}
		s, ok := "", false
		if len(args) == 1 {
			s, ok = args[0].(string)
		}
		if !ok {
			var err error
			if s, err = r.sprint(args, 0); err != nil {
				return "", err
			}
		}
		if err := r.reserve(grow*len(s) + 2); err != nil {
			return "", err
		}
		out := esc(s)
		r.charge(len(out))
		return out, nil
	}
}

// escapeWith makes one of text/template's escaping writers a function
// that allocates its result once: it counts the result's bytes first
// (HTMLEscapeString and JSEscapeString grow a builder, which allocates
// up to 5 times the result).
func escapeWith(esc func(io.Writer, []byte)) func(string) string {
	return func(s string) string {
		b := []byte(s)
		var n counter
		esc(&n, b)
		if int(n) == len(s) {
			return s // every special byte expands: none was found
		}
		var out strings.Builder
		out.Grow(int(n))
		esc(&out, b)
		return out.String()
	}
}

type counter int

func (c *counter) Write(p []byte) (int, error) {
	*c += counter(len(p))
	return len(p), nil
}

// quoteYAML writes s as a double-quoted scalar that is both a JSON string
// and a YAML 1.1 and 1.2 scalar: quotes, backslashes, control characters,
// the C1 range, line and paragraph separators, BOM and non-characters are
// escaped (PyYAML, which cloud-init uses, rejects some of them even
// quoted); invalid UTF-8 becomes U+FFFD. Nothing in s can end the scalar.
func quoteYAML(s string) string {
	n := 2
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		n += len(yamlEscape(c, size, s[i:i+size]))
		i += size
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		b.WriteString(yamlEscape(c, size, s[i:i+size]))
		i += size
	}
	b.WriteByte('"')
	return b.String()
}

// yamlEscape is how quoteYAML writes the rune c, encoded as raw.
func yamlEscape(c rune, size int, raw string) string {
	switch {
	case c == utf8.RuneError && size == 1:
		return `\ufffd`
	case c == '"':
		return `\"`
	case c == '\\':
		return `\\`
	case c == '\n':
		return `\n`
	case c == '\r':
		return `\r`
	case c == '\t':
		return `\t`
	case c < 0x20, 0x7f <= c && c <= 0x9f, c == 0x2028, c == 0x2029, c == 0xfeff, c == 0xfffe, c == 0xffff:
		const hex = "0123456789abcdef"
		return string([]byte{'\\', 'u', hex[c>>12&0xf], hex[c>>8&0xf], hex[c>>4&0xf], hex[c&0xf]})
	}
	return raw
}

// quoteShell writes s as one single-quoted POSIX shell word.
func quoteShell(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
