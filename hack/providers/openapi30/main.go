// Command openapi30 rewrites an OpenAPI 3.1 description (Lambda Cloud's,
// RunPod's REST v2) into the OpenAPI 3.0 dialect oapi-codegen v2 understands. It reads the spec named
// by its first argument and writes the result to its second; the original
// file is never modified.
//
// The rewrites are syntactic and keep the shape of every schema:
//   - "type": [T, "null"] becomes "type": T with "nullable": true;
//   - "anyOf": [X, {"type": "null"}] becomes X's keywords with "nullable": true;
//   - "const": v becomes "enum": [v];
//   - JSON-Schema "examples" arrays inside schemas are dropped (3.0 allows
//     only a single "example"; they are documentation, not shape);
//   - the 2020-12 validation-only keywords 3.0 lacks ("if"/"then"/"else",
//     "dependentRequired", "unevaluatedProperties") are dropped;
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
		fmt.Fprintln(os.Stderr, "usage: openapi30 <openapi-3.1.json> <out.json>")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "openapi30:", err)
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

// dropped are JSON Schema 2020-12 keywords with no OpenAPI 3.0 equivalent.
// They only constrain validation, never the generated Go types.
var dropped = []string{"if", "then", "else", "dependentRequired", "unevaluatedProperties"}

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
		for _, k := range dropped {
			delete(x, k)
		}
		collapseTypeList(x)
		collapseNullableAnyOf(x)
		for _, child := range x {
			rewrite(child)
		}
	case []any:
		for _, child := range x {
			rewrite(child)
		}
	}
}

// collapseTypeList turns {"type": [T, "null"]} into {"type": T, "nullable": true}.
func collapseTypeList(schema map[string]any) {
	types, ok := schema["type"].([]any)
	if !ok {
		return
	}
	var kept []any
	nullable := false
	for _, t := range types {
		if t == "null" {
			nullable = true
			continue
		}
		kept = append(kept, t)
	}
	if len(kept) != 1 {
		return // not a "T or null" union; leave it for the loader to report
	}
	schema["type"] = kept[0]
	if nullable {
		schema["nullable"] = true
	}
}

// collapseNullableAnyOf turns {"anyOf": [X, {"type": "null"}], ...} into X's
// keywords merged into the schema plus "nullable": true.
func collapseNullableAnyOf(schema map[string]any) {
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
