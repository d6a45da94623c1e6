package bootstrap

import (
	"fmt"
	"strings"
	"text/template"
)

// plainRender is text/template without bounds, as the controller renders
// today: what the bounded renderer must agree with on benign input.
func plainRender(text string, data Data) (string, error) {
	// yaml and shell take their arguments as html does.
	text1 := func(args []any) string {
		if s, ok := "", len(args) == 1; ok {
			if s, ok = args[0].(string); ok {
				return s
			}
		}
		return fmt.Sprint(args...)
	}
	tmpl, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"yaml":  func(args ...any) string { return quoteYAML(text1(args)) },
		"shell": func(args ...any) string { return quoteShell(text1(args)) },
	}).Parse(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}
