package bootstrap

import (
	"strings"
	"testing"
	"text/template/parse"
)

// treeShape is the nesting the parser built: control structures (an
// "else if" is an if in the else list) and parenthesized pipelines.
func treeShape(n parse.Node) (depth, parens int) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return 0, 0
		}
		for _, c := range n.Nodes {
			d, p := treeShape(c)
			depth, parens = max(depth, d), max(parens, p)
		}
	case *parse.ActionNode:
		return 0, pipeParens(n.Pipe)
	case *parse.IfNode:
		return branchShape(&n.BranchNode)
	case *parse.WithNode:
		return branchShape(&n.BranchNode)
	case *parse.RangeNode:
		return branchShape(&n.BranchNode)
	case *parse.TemplateNode:
		return 0, pipeParens(n.Pipe)
	}
	return depth, parens
}

func branchShape(b *parse.BranchNode) (int, int) {
	d1, p1 := treeShape(b.List)
	d2, p2 := treeShape(b.ElseList)
	return 1 + max(d1, d2), max(pipeParens(b.Pipe), p1, p2)
}

func pipeParens(p *parse.PipeNode) int {
	if p == nil {
		return 0
	}
	deepest := 0
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			deepest = max(deepest, argParens(a))
		}
	}
	return deepest
}

func argParens(n parse.Node) int {
	switch n := n.(type) {
	case *parse.PipeNode:
		return 1 + pipeParens(n)
	case *parse.ChainNode:
		return argParens(n.Node)
	}
	return 0
}

// checkScan fails when the parser nests deeper than scan counted: scan
// must never count less than the parser will see.
func checkScan(t *testing.T, text string) {
	t.Helper()
	sh, err := scan(text, 1<<30, 1<<30)
	if err != nil {
		t.Fatalf("scan without limits: %v", err)
	}
	tree := parse.New(name)
	if _, err := tree.Parse(text, "", "", map[string]*parse.Tree{}, funcNames); err != nil {
		return // nothing runs after a parse error
	}
	if d, p := treeShape(tree.Root); d > sh.depth || p > sh.parens {
		t.Fatalf("%q: the parser nests %d control structures and %d parentheses; scan counted %d and %d", text, d, p, sh.depth, sh.parens)
	}
}

func TestScanCountsWhatTheParserNests(t *testing.T) {
	for _, text := range []string{
		`{{if 1}}{{if 2}}{{(((3)))}}{{end}}{{end}}`,
		`{{if 0}}a{{else if 1}}b{{else if 2}}{{if (1)}}c{{end}}{{else}}d{{end}}`,
		`{{with 0}}a{{else with 1}}b{{else with 2}}c{{end}}`,
		`{{range .Labels}}{{else}}{{if 1}}{{end}}{{end}}`,
		// An end that scan would take for an action if it lost track of
		// strings, raw strings, characters or comments.
		`{{if 1}}{{ "}}{{end}}" | printf "%s" }}{{if 1}}x{{end}}{{end}}`,
		"{{if 1}}{{ `}}{{end}}` }}{{if 1}}x{{end}}{{end}}",
		`{{if 1}}{{ '}' }}{{ "x" }}{{if 1}}x{{end}}{{end}}`,
		`{{if 1}}{{ "\"}}{{end}}" }}{{if 1}}x{{end}}{{end}}`,
		`{{if 1}}{{/* }}{{end}} */}}{{if 1}}x{{end}}{{end}}`,
		"{{if 1}}{{- /* }}{{end}} */ -}}{{if 1}}x{{end}}{{end}}",
		"{{if 1}}{{/* x */\t-}}{{if 1}}x{{end}}{{end}}",
		`{{if 1}}{{ printf "%s" (print "}}{{end}}") }}{{with ((1))}}x{{end}}{{end}}`,
		`{{-3}}{{- if 1 -}}{{- if 1 -}}x{{- end -}}{{- end -}}`,
		"{{if\n1}}{{if\t1}}x{{end\n}}{{end}}",
		`{{(.).NodeName}}{{((.)).NodeName}}`,
		`{{if 1}}{{end}}{{end}}{{if 1}}{{if 1}}{{end}}{{end}}`,
		`{{block "x" .}}{{if 1}}{{end}}{{end}}`,
	} {
		checkScan(t, text)
	}
	// And the parser's recursion stops where scan refuses.
	for _, text := range []string{
		nested(101, "{{if 1}}", ""), "{{if 0}}" + strings.Repeat("{{else if 0}}", 100) + "{{end}}",
		"{{" + strings.Repeat("(", 101) + "1" + strings.Repeat(")", 101) + "}}",
	} {
		if err := prescan(text); err == nil || err.Class != ClassTooComplex {
			t.Errorf("prescan of %.30q...: %v, want TooComplex", text, err)
		}
	}
}
