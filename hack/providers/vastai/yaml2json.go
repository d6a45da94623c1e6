//go:build ignore

// yaml2json rewrites Vast.ai's OpenAPI document, published as YAML, as JSON,
// the input hack/providers/openapi30 reads. The conversion keeps every key
// and value (sigs.k8s.io/yaml: YAML 1.2 scalars, map keys written sorted),
// so the output is deterministic; the document itself is never modified.
//
// Usage: go run yaml2json.go <in.yaml> <out.json>
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go run yaml2json.go <in.yaml> <out.json>")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "yaml2json:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, js, "", "  "); err != nil {
		return err
	}
	pretty.WriteByte('\n')
	return os.WriteFile(out, pretty.Bytes(), 0o644)
}
