package bootstrap

import (
	"fmt"
	"strings"
	"text/template/parse"
)

// name is the template's name; text/template puts it in its errors, where
// lineOf finds the line after it.
const name = "bootstrap"

const (
	// MaxTemplateBytes is the largest template text Render reads.
	MaxTemplateBytes = 1 << 20
	// maxActionBytes bounds the bytes of actions, delimiters included. The
	// parser allocates about 110 bytes per byte of action code (and takes
	// 0.6 s per MiB): text outside actions is cheap, code is not.
	maxActionBytes = 32 << 10
	// maxDepth bounds nested control structures (each "else if" counts, as
	// the parser recurses for it) and nested parentheses: the parser and
	// the executor recurse once per level.
	maxDepth = 100
	// maxVariables bounds variable declarations: the executor finds a
	// variable by walking back through those in scope, so a reference,
	// one step, would otherwise cost up to the 3,000 declarations that
	// fit in the action code.
	maxVariables = 64
)

// funcNames are the functions a template may name: text/template's
// builtins and this package's additions. The parser reports any other as
// undefined; "call" is refused by the analysis with a clearer error.
var funcNames = map[string]any{
	"and": true, "call": true, "html": true, "index": true, "slice": true, "js": true,
	"len": true, "not": true, "or": true, "print": true, "printf": true, "println": true,
	"urlquery": true, "eq": true, "ge": true, "gt": true, "le": true, "lt": true, "ne": true,
	"yaml": true, "shell": true,
}

// prescan bounds what the parser will do, before it runs: the parser has
// no limit on the nesting of control structures (its recursion took
// 256 MB of stack for 1 MiB of "if" actions) and allocates in proportion
// to the action code.
func prescan(text string) *Error {
	_, err := scan(text, maxDepth, maxActionBytes)
	return err
}

// shape is what scan measures of a template.
type shape struct {
	depth  int // deepest nesting of control structures, "else if" counting one
	parens int // deepest nesting of parentheses
	code   int // bytes of actions, delimiters included
}

// scan finds actions as text/template's lexer does: from a left delimiter
// to the first right delimiter outside a string, raw string or character
// constant, comments skipped. Where the two could differ the lexer stops
// with an error, so the parser never goes further than scan counted
// (FuzzRender checks the parsed tree's depths against scan's). It stops
// with an Error when a depth passes maxDepth or the code maxCode.
func scan(text string, maxDepth, maxCode int) (shape, *Error) {
	var (
		sh    shape
		open  []int // per open control structure, 1 + its "else if"/"else with" count
		depth int   // sum of open
	)
	for i := 0; ; {
		j := strings.Index(text[i:], "{{")
		if j < 0 {
			return sh, nil
		}
		start := i + j
		p := start + 2
		if len(text) > p+1 && text[p] == '-' && isSpace(text[p+1]) {
			p += 2
		}
		if strings.HasPrefix(text[p:], "/*") {
			k := strings.Index(text[p+2:], "*/")
			if k < 0 {
				return sh, nil // the parser reports the unclosed comment
			}
			p += 2 + k + 2
			if len(text) > p+1 && isSpace(text[p]) && text[p+1] == '-' {
				p += 2
			}
			// Anything but a right delimiter here is a lexer error; scanning
			// on as text can only count more than the parser sees.
			i = p
			if strings.HasPrefix(text[p:], "}}") {
				i = p + 2
			}
			continue
		}
		word, rest := firstWord(text[p:])
		switch word {
		case "if", "range", "with", "block", "define":
			open = append(open, 1)
			depth++
		case "end":
			if n := len(open); n > 0 {
				depth -= open[n-1]
				open = open[:n-1]
			}
		case "else":
			if w, _ := firstWord(rest); (w == "if" || w == "with") && len(open) > 0 {
				open[len(open)-1]++
				depth++
			}
		}
		if sh.depth = max(sh.depth, depth); depth > maxDepth {
			return sh, newError(ClassTooComplex, detailDepth).at(lineAt(text, start))
		}
		q, parens := p, 0
	action:
		for q < len(text) {
			switch c := text[q]; {
			case c == '}' && q+1 < len(text) && text[q+1] == '}':
				break action
			case c == '"' || c == '\'':
				q = skipQuoted(text, q, c)
			case c == '`':
				if k := strings.IndexByte(text[q+1:], '`'); k >= 0 {
					q += k + 2
				} else {
					q = len(text)
				}
			case c == '(':
				if parens++; parens > maxDepth {
					return sh, newError(ClassTooComplex, detailDepth).at(lineAt(text, q))
				}
				sh.parens = max(sh.parens, parens)
				q++
			case c == ')':
				parens--
				q++
			default:
				q++
			}
		}
		if sh.code += min(q+2, len(text)) - start; sh.code > maxCode {
			return sh, newError(ClassTooComplex, detailCode).at(lineAt(text, start))
		}
		if q >= len(text) {
			return sh, nil // unclosed action: the parser reports it
		}
		i = q + 2
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// firstWord skips spaces and returns the ASCII identifier that follows
// and the text after it. A keyword is matched wherever the lexer would
// see one (it may see a longer, non-ASCII identifier where this sees a
// keyword: then prescan over-counts, which is safe).
func firstWord(s string) (string, string) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	j := i
	for j < len(s) && (s[j] == '_' || 'a' <= s[j] && s[j] <= 'z' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
		j++
	}
	return s[i:j], s[j:]
}

// skipQuoted returns the index after the string or character constant
// opening at s[i], or of the newline or end of text that leaves it
// unterminated (a lexer error).
func skipQuoted(s string, i int, quote byte) int {
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) && s[i+1] != '\n' {
				i++
			}
		case '\n':
			return i
		case quote:
			return i + 1
		}
	}
	return i
}

func lineAt(text string, pos int) int {
	pos = min(max(pos, 0), len(text))
	return 1 + strings.Count(text[:pos], "\n")
}

// parseTree parses text as the one template of a bootstrap Secret.
// define and block (and so recursion through template) are refused.
func parseTree(text string) (*parse.Tree, *Error) {
	t := parse.New(name)
	trees := map[string]*parse.Tree{}
	if _, err := t.Parse(text, "", "", trees, funcNames); err != nil {
		return nil, parseError(err)
	}
	if len(trees) != 1 || trees[name] != t {
		line := 0
		for _, d := range trees {
			if d != t && d.Root != nil {
				if l := lineAt(text, int(d.Root.Position())); line == 0 || l < line {
					line = l
				}
			}
		}
		return nil, newError(ClassForbidden, detailDefine).at(line)
	}
	return t, nil
}

// dotKind is what dot holds where a node is evaluated, as far as range
// cares.
type dotKind uint8

const (
	dotRoot   dotKind = iota // the Data
	dotLabels                // Data.Labels (inside a with of it)
	dotTaints                // Data.Taints (inside a with of it)
	dotOther
)

// analyzer bounds the number of node evaluations of a tree before it
// runs. Every node counts one; a pipeline counts its commands and their
// arguments; if and with count the costlier branch; range counts its body
// once per element of what it ranges over, which can only be Labels or
// Taints, whose lengths are known. Template calls are refused, so nothing
// else repeats. The sums saturate at limit+1.
type analyzer struct {
	text           string
	labels, taints int
	limit          int
	forbidden      *Error
	overLine       int // first (innermost) line whose cost went over the limit
	vars           int // variable declarations
	varsLine       int // line of the first declaration over maxVariables
}

// analyze returns the worst-case evaluation count of tree for data, or
// the Error that refuses the tree.
func analyze(tree *parse.Tree, text string, data Data, maxSteps int) (int, *Error) {
	a := &analyzer{text: text, labels: len(data.Labels), taints: len(data.Taints), limit: min(maxSteps, MaxMaxSteps)}
	cost := a.list(tree.Root, dotRoot)
	if a.forbidden != nil {
		return cost, a.forbidden
	}
	if a.vars > maxVariables {
		return cost, newError(ClassTooComplex, detailVariables).at(a.varsLine)
	}
	if cost > a.limit {
		return cost, newError(ClassTooComplex, fmt.Sprintf(detailStepsFmt, a.limit)).at(a.overLine)
	}
	return cost, nil
}

func (a *analyzer) add(x, y int) int { return min(x+y, a.limit+1) }

func (a *analyzer) mul(n, c int) int {
	if n == 0 || c == 0 {
		return 0
	}
	if c > (a.limit+1)/n {
		return a.limit + 1
	}
	return min(n*c, a.limit+1)
}

func (a *analyzer) line(n parse.Node) int { return lineAt(a.text, int(n.Position())) }

// mark records n's line if its cost is the first to go over the limit.
func (a *analyzer) mark(n parse.Node, cost int) {
	if cost > a.limit && a.overLine == 0 {
		a.overLine = a.line(n)
	}
}

func (a *analyzer) forbid(n parse.Node, detail string) {
	if a.forbidden == nil {
		a.forbidden = newError(ClassForbidden, detail).at(a.line(n))
	}
}

func (a *analyzer) list(l *parse.ListNode, dot dotKind) int {
	if l == nil {
		return 0
	}
	sum := 0
	for _, n := range l.Nodes {
		sum = a.add(sum, a.node(n, dot))
		a.mark(n, sum)
	}
	return sum
}

func (a *analyzer) node(n parse.Node, dot dotKind) int {
	var cost int
	switch n := n.(type) {
	case *parse.TextNode, *parse.CommentNode, *parse.BreakNode, *parse.ContinueNode:
		return 1
	case *parse.ActionNode:
		cost = a.add(1, a.pipe(n.Pipe))
	case *parse.IfNode:
		cost = a.branch(&n.BranchNode, dot, dot)
	case *parse.WithNode:
		cost = a.branch(&n.BranchNode, a.withDot(n.Pipe, dot), dot)
	case *parse.RangeNode:
		iters, ok := a.rangeLen(n.Pipe, dot)
		if !ok {
			a.forbid(n, detailRange)
		}
		cost = a.add(1, a.pipe(n.Pipe))
		cost = a.add(cost, a.mul(iters, a.add(1, a.list(n.List, dotOther))))
		cost = a.add(cost, a.list(n.ElseList, dot))
	case *parse.TemplateNode:
		a.forbid(n, detailDefine)
		return 1
	default:
		a.forbid(n, detailNode)
		return 1
	}
	a.mark(n, cost)
	return cost
}

func (a *analyzer) branch(b *parse.BranchNode, bodyDot, elseDot dotKind) int {
	cost := a.add(1, a.pipe(b.Pipe))
	return a.add(cost, max(a.list(b.List, bodyDot), a.list(b.ElseList, elseDot)))
}

func (a *analyzer) pipe(p *parse.PipeNode) int {
	if p == nil {
		return 0
	}
	cost := a.add(1, len(p.Decl))
	for _, v := range p.Decl {
		if len(v.Ident) > 0 && v.Ident[0] == "$" {
			a.forbid(v, detailDollar)
		}
		if !p.IsAssign {
			if a.vars++; a.vars == maxVariables+1 {
				a.varsLine = a.line(v)
			}
		}
	}
	for _, c := range p.Cmds {
		cost = a.add(cost, a.command(c))
	}
	return cost
}

func (a *analyzer) command(c *parse.CommandNode) int {
	cost := 1
	for _, arg := range c.Args {
		cost = a.add(cost, a.arg(arg))
	}
	return cost
}

func (a *analyzer) arg(n parse.Node) int {
	switch n := n.(type) {
	case *parse.IdentifierNode:
		if n.Ident == "call" {
			a.forbid(n, detailCall)
		}
		return 1
	case *parse.PipeNode:
		return a.add(1, a.pipe(n))
	case *parse.ChainNode:
		return a.add(1, a.arg(n.Node))
	case *parse.FieldNode, *parse.VariableNode, *parse.DotNode, *parse.NilNode,
		*parse.BoolNode, *parse.NumberNode, *parse.StringNode:
		return 1
	}
	a.forbid(n, detailNode)
	return 1
}

// target is what a range or with pipeline names, when it is a single
// operand: the Data, its Labels or its Taints; dotOther otherwise.
func target(p *parse.PipeNode, dot dotKind) dotKind {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return dotOther
	}
	field := func(f string) dotKind {
		switch f {
		case "Labels":
			return dotLabels
		case "Taints":
			return dotTaints
		}
		return dotOther
	}
	switch n := p.Cmds[0].Args[0].(type) {
	case *parse.DotNode:
		return dot
	case *parse.FieldNode:
		if dot == dotRoot && len(n.Ident) == 1 {
			return field(n.Ident[0])
		}
	case *parse.VariableNode:
		// $ is always the Data: the analysis refuses declaring or
		// assigning it.
		switch {
		case len(n.Ident) == 1 && n.Ident[0] == "$":
			return dotRoot
		case len(n.Ident) == 2 && n.Ident[0] == "$":
			return field(n.Ident[1])
		}
	}
	return dotOther
}

func (a *analyzer) withDot(p *parse.PipeNode, dot dotKind) dotKind { return target(p, dot) }

func (a *analyzer) rangeLen(p *parse.PipeNode, dot dotKind) (int, bool) {
	switch target(p, dot) {
	case dotLabels:
		return a.labels, true
	case dotTaints:
		return a.taints, true
	}
	return 0, false
}
