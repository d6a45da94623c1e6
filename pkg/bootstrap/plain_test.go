package bootstrap

import (
	"strings"
	"text/template"
)

// plainRender is text/template without bounds, as the controller renders
// today: what the bounded renderer must agree with on benign input.
func plainRender(text string, data Data) (string, error) {
	tmpl, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"yaml": quoteYAML, "shell": quoteShell,
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
