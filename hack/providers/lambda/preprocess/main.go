// Command preprocess rewrites Lambda's OpenAPI 3.1 description into the
// OpenAPI 3.0 dialect that oapi-codegen v2 understands. It reads the spec
// named by its first argument and writes the result to its second; the
// original file is never modified.
//
// The rewrites are purely syntactic and keep the meaning of every schema:
//   - "const": v becomes "enum": [v];
//   - JSON-Schema "examples" arrays inside schemas are dropped (3.0 allows only
//     a single "example"; they are documentation, not shape);
//   - "anyOf": [X, {"type": "null"}] becomes X with "nullable": true;
//   - the "openapi" version is set to 3.0.3.
//
// Output is deterministic: encoding/json writes object keys sorted.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: preprocess <openapi-3.1.json> <out.json>")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "preprocess:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep numbers exactly as written
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	doc["openapi"] = "3.0.3"
	rewrite(doc)
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

// rewrite walks the document and applies the 3.1 -> 3.0 rewrites in place.
func rewrite(v any) {
	switch x := v.(type) {
	case map[string]any:
		if c, ok := x["const"]; ok {
			x["enum"] = []any{c}
			delete(x, "const")
		}
		if _, ok := x["examples"].([]any); ok {
			delete(x, "examples")
		}
		collapseNullable(x)
		for _, child := range x {
			rewrite(child)
		}
	case []any:
		for _, child := range x {
			rewrite(child)
		}
	}
}

// collapseNullable turns {"anyOf": [X, {"type": "null"}], ...} into X's
// keywords merged into the schema plus "nullable": true.
func collapseNullable(schema map[string]any) {
	alts, ok := schema["anyOf"].([]any)
	if !ok || len(alts) != 2 {
		return
	}
	for i, alt := range alts {
		m, ok := alt.(map[string]any)
		if !ok || len(m) != 1 || m["type"] != "null" {
			continue
		}
		other, ok := alts[1-i].(map[string]any)
		if !ok {
			return
		}
		delete(schema, "anyOf")
		for k, val := range other {
			if _, exists := schema[k]; !exists {
				schema[k] = val
			}
		}
		schema["nullable"] = true
		return
	}
}
