package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const webModule = `module: "example.com/web@v0"
language: version: "v0.17.0"
`

const webservice = `package webservice

#Input: {
	name:     string
	image:    string
	port:     *8080 | int & >0 & <65536
	replicas: *1 | int
}

input: #Input

graph: nodes: [{
	id: "deployment"
	object: {
		apiVersion: "apps/v1"
		kind:       "Deployment"
		metadata: name: input.name
		spec: {
			replicas: input.replicas
			template: spec: containers: [{
				name:  input.name
				image: input.image
				ports: [{containerPort: input.port}]
			}]
		}
	}
}, {
	id: "service"
	object: {
		apiVersion: "v1"
		kind:       "Service"
		metadata: name: input.name
		spec: ports: [{port: input.port}]
	}
}]

outputs: url: "http://\(input.name):\(input.port)"
`

// response is the union of both response shapes, for decoding in tests.
type response struct {
	Graph      json.RawMessage `json:"graph"`
	Outputs    json.RawMessage `json:"outputs"`
	Violations json.RawMessage `json:"violations"`
	Errors     []Error         `json:"errors"`
}

func evalReq(t *testing.T, req any) (response, []byte) {
	t.Helper()
	var data []byte
	switch r := req.(type) {
	case []byte:
		data = r
	case string:
		data = []byte(r)
	default:
		var err error
		data, err = json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
	}
	out := Evaluate(data)
	var resp response
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, out)
	}
	// Every response has exactly one shape.
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(out, &raw)
	if _, isErr := raw["errors"]; isErr && len(raw) != 1 {
		t.Fatalf("error response has extra keys: %s", out)
	}
	return resp, out
}

func webReq(input string) map[string]any {
	return map[string]any{
		"files": map[string]string{
			"cue.mod/module.cue": webModule,
			"webservice.cue":     webservice,
		},
		"package": ".",
		"input":   json.RawMessage(input),
	}
}

func mustSucceed(t *testing.T, resp response, out []byte) {
	t.Helper()
	if resp.Errors != nil || resp.Graph == nil {
		t.Fatalf("expected success, got %s", out)
	}
}

func mustFail(t *testing.T, resp response, out []byte) {
	t.Helper()
	if len(resp.Errors) == 0 {
		t.Fatalf("expected errors, got %s", out)
	}
	for _, e := range resp.Errors {
		if e.Positions == nil {
			t.Errorf("positions must be an array, not null: %s", out)
		}
	}
}

func findError(resp response, phase, path string) *Error {
	for i, e := range resp.Errors {
		if e.Phase == phase && e.Path == path {
			return &resp.Errors[i]
		}
	}
	return nil
}

// findErrorWith returns the first error with the given phase and path whose
// message contains msg and which has a position in file.
func findErrorWith(resp response, phase, path, msg, file string) *Error {
	for i, e := range resp.Errors {
		if e.Phase == phase && e.Path == path && strings.Contains(e.Message, msg) && hasPosIn(&e, file) {
			return &resp.Errors[i]
		}
	}
	return nil
}

func hasPosIn(e *Error, file string) bool {
	for _, p := range e.Positions {
		if p.File == file && p.Line > 0 && p.Column > 0 {
			return true
		}
	}
	return false
}

func jsonEq(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("bad JSON %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestWebservice(t *testing.T) {
	resp, out := evalReq(t, webReq(`{"name": "web", "image": "nginx"}`))
	mustSucceed(t, resp, out)
	jsonEq(t, resp.Graph, `{"nodes": [
		{"id": "deployment", "object": {"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": {"name": "web"},
			"spec": {"replicas": 1, "template": {"spec": {"containers": [
				{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]}}}}},
		{"id": "service", "object": {"apiVersion": "v1", "kind": "Service",
			"metadata": {"name": "web"}, "spec": {"ports": [{"port": 8080}]}}}]}`)
	jsonEq(t, resp.Outputs, `{"url": "http://web:8080"}`)
	if string(resp.Violations) != "null" && resp.Violations != nil {
		t.Errorf("violations: got %s, want null", resp.Violations)
	}
	if !strings.Contains(string(out), `"violations":null`) {
		t.Errorf("absent violations must be null: %s", out)
	}

	resp, out = evalReq(t, webReq(`{"name": "api", "image": "x", "port": 9090, "replicas": 3}`))
	mustSucceed(t, resp, out)
	jsonEq(t, resp.Outputs, `{"url": "http://api:9090"}`)
	if !strings.Contains(string(resp.Graph), `"replicas":3`) {
		t.Errorf("replicas not filled: %s", resp.Graph)
	}
}

func TestSchemaViolations(t *testing.T) {
	for _, tc := range []struct {
		input, path, msg string
	}{
		{`{"name": "web", "image": "nginx", "replicas": "three"}`, "input.replicas", ""},
		{`{"name": "web", "image": "nginx", "port": 70000}`, "input.port", "70000"},
		{`{"name": "web", "image": "nginx", "extra": true}`, "input.extra", "not allowed"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, out := evalReq(t, webReq(tc.input))
			mustFail(t, resp, out)
			t.Logf("%s", out)
			for _, e := range resp.Errors {
				if e.Phase != PhaseSchema {
					t.Errorf("phase %q, want schema: %s", e.Phase, out)
				}
				if e.Incomplete {
					t.Errorf("unexpected incomplete: %s", out)
				}
				for _, p := range e.Positions {
					if p.File != "webservice.cue" {
						t.Errorf("unexpected position file %q", p.File)
					}
				}
			}
			e := findErrorWith(resp, PhaseSchema, tc.path, tc.msg, "webservice.cue")
			if e == nil {
				t.Fatalf("no schema error at %s mentioning %q with a position in webservice.cue: %s", tc.path, tc.msg, out)
			}
		})
	}
}

func TestSchemaDisjunctionKeepsBranches(t *testing.T) {
	resp, out := evalReq(t, webReq(`{"name": "web", "image": "nginx", "port": 70000}`))
	mustFail(t, resp, out)
	n := 0
	for _, e := range resp.Errors {
		if e.Path == "input.port" {
			n++
		}
	}
	if n < 3 {
		t.Errorf("want header + one entry per branch (>= 3) for input.port, got %d: %s", n, out)
	}
}

func TestSchemaMissingField(t *testing.T) {
	resp, out := evalReq(t, webReq(`{"name": "web"}`))
	mustFail(t, resp, out)
	e := findError(resp, PhaseSchema, "input.image")
	if e == nil || !e.Incomplete {
		t.Fatalf("want incomplete schema error at input.image: %s", out)
	}
}

func TestIncompleteGraph(t *testing.T) {
	req := webReq(`{"name": "web", "image": "nginx"}`)
	req["files"].(map[string]string)["extra.cue"] = "package webservice\n\ngraph: annotations: owner: string\n"
	resp, out := evalReq(t, req)
	mustFail(t, resp, out)
	e := findError(resp, PhaseExport, "graph.annotations.owner")
	if e == nil {
		t.Fatalf("no export error at graph.annotations.owner: %s", out)
	}
	if !e.Incomplete {
		t.Errorf("want incomplete: %s", out)
	}
	if !hasPosIn(e, "extra.cue") {
		t.Errorf("want a position in extra.cue: %s", out)
	}
}

func TestMissingGraph(t *testing.T) {
	resp, out := evalReq(t, map[string]any{
		"files": map[string]string{"x.cue": "package x\n\ninput: {...}\noutputs: a: 1\n"},
		"input": map[string]any{},
	})
	mustFail(t, resp, out)
	if e := findError(resp, PhaseEval, "graph"); e == nil || !strings.Contains(e.Message, "graph") {
		t.Fatalf("want eval error at graph: %s", out)
	}
}

func TestConflict(t *testing.T) {
	req := webReq(`{"name": "web", "image": "nginx"}`)
	req["files"].(map[string]string)["conflict.cue"] = "package webservice\n\ngraph: nodes: [{id: \"other\"}, ...]\n"
	resp, out := evalReq(t, req)
	mustFail(t, resp, out)
	t.Logf("%s", out)
	e := findError(resp, PhaseEval, "graph.nodes.0.id")
	if e == nil {
		t.Fatalf("want eval error at graph.nodes.0.id: %s", out)
	}
	if e.Incomplete || !hasPosIn(e, "conflict.cue") || !hasPosIn(e, "webservice.cue") {
		t.Errorf("want positions in both files and not incomplete: %s", out)
	}
}

func TestFailedConstraintAfterFill(t *testing.T) {
	// A constraint outside #Input that only fails once input is filled.
	req := webReq(`{"name": "web", "image": "nginx", "replicas": 20}`)
	req["files"].(map[string]string)["limits.cue"] = "package webservice\n\ninput: replicas: <=10\n"
	resp, out := evalReq(t, req)
	mustFail(t, resp, out)
	if e := findErrorWith(resp, PhaseEval, "input.replicas", "out of bound <=10", "limits.cue"); e == nil {
		t.Fatalf("want eval error at input.replicas with position in limits.cue: %s", out)
	}
}

func TestViolations(t *testing.T) {
	req := webReq(`{"name": "web", "image": "nginx", "replicas": 1}`)
	req["files"].(map[string]string)["policy.cue"] = `package webservice

violations: [
	if input.replicas < 2 {"replicas should be >= 2 for HA"},
]
`
	resp, out := evalReq(t, req)
	mustSucceed(t, resp, out)
	jsonEq(t, resp.Violations, `["replicas should be >= 2 for HA"]`)
}

const policyModule = `module: "example.com/policy@v0"
language: version: "v0.17.0"
`

const policyPkg = `package policy

#MaxReplicas: 5
#Check: {
	replicas: int
	ok: replicas <= #MaxReplicas
}
`

func TestDependency(t *testing.T) {
	req := map[string]any{
		"files": map[string]string{
			"cue.mod/module.cue": `module: "example.com/app@v0"
language: version: "v0.17.0"
deps: "example.com/policy@v0": v: "v0.1.0"
`,
			"app/app.cue": `package app

import "example.com/policy"

#Input: replicas: int
input: #Input
graph: nodes: [{replicas: input.replicas, max: policy.#MaxReplicas}]
outputs: check: (policy.#Check & {replicas: input.replicas}).ok
`,
		},
		"package": "app",
		"input":   map[string]any{"replicas": 3},
		"deps": []any{map[string]any{
			"module":  "example.com/policy@v0",
			"version": "v0.1.0",
			"files": map[string]string{
				"cue.mod/module.cue": policyModule,
				"policy.cue":         policyPkg,
			},
		}},
	}
	resp, out := evalReq(t, req)
	mustSucceed(t, resp, out)
	jsonEq(t, resp.Graph, `{"nodes": [{"replicas": 3, "max": 5}]}`)
	jsonEq(t, resp.Outputs, `{"check": true}`)

	// An error inside the dependency reports a dependency position.
	req["deps"].([]any)[0].(map[string]any)["files"].(map[string]string)["policy.cue"] =
		policyPkg + "#Check: replicas: <=2\n"
	resp, out = evalReq(t, req)
	mustFail(t, resp, out)
	t.Logf("%s", out)
	found := false
	for _, e := range resp.Errors {
		if hasPosIn(&e, "example.com/policy@v0.1.0/policy.cue") {
			found = true
		}
	}
	if !found {
		t.Errorf("want a position in example.com/policy@v0.1.0/policy.cue: %s", out)
	}

	// Missing dependency → load error.
	delete(req, "deps")
	resp, out = evalReq(t, req)
	mustFail(t, resp, out)
	if resp.Errors[0].Phase != PhaseLoad {
		t.Errorf("want load error for missing dependency: %s", out)
	}
}

func TestModulelessSubpackage(t *testing.T) {
	resp, out := evalReq(t, map[string]any{
		"files":   map[string]string{"sub/x.cue": "package x\n\ninput: {n: int}\ngraph: double: input.n * 2\n"},
		"package": "sub",
		"input":   map[string]any{"n": 21},
	})
	mustSucceed(t, resp, out)
	jsonEq(t, resp.Graph, `{"double": 42}`)
	if string(resp.Outputs) != "null" {
		t.Errorf("absent outputs must be null: %s", out)
	}
}

func TestLoadError(t *testing.T) {
	resp, out := evalReq(t, map[string]any{
		"files": map[string]string{"cue.mod/module.cue": webModule, "bad.cue": "package x\n\ngraph: {\n"},
		"input": map[string]any{},
	})
	mustFail(t, resp, out)
	if resp.Errors[0].Phase != PhaseLoad || !hasPosIn(&resp.Errors[0], "bad.cue") {
		t.Errorf("want load error in bad.cue: %s", out)
	}
}

func TestCacheKey(t *testing.T) {
	const key = "sha256:test-cache-key"
	fresh := func(input string) []byte {
		_, out := evalReq(t, webReq(input))
		return out
	}
	cached := func(input string) []byte {
		r := webReq(input)
		r["cacheKey"] = key
		_, out := evalReq(t, r)
		return out
	}
	a := `{"name": "a", "image": "nginx"}`
	b := `{"name": "b", "image": "httpd", "port": 81, "replicas": 2}`
	moduleCache.remove(key)
	miss := cached(a)
	if moduleCache.get(key) == nil {
		t.Fatal("entry not cached after miss")
	}
	hit := cached(a)
	if string(miss) != string(hit) {
		t.Errorf("hit differs from miss:\nmiss %s\nhit  %s", miss, hit)
	}
	if string(miss) != string(fresh(a)) {
		t.Errorf("cached differs from uncached")
	}
	// A hit with another input must not see the previous input.
	if got, want := cached(b), fresh(b); string(got) != string(want) {
		t.Errorf("hit with other input:\ngot  %s\nwant %s", got, want)
	}
	if got, want := cached(`{"name": "a", "image": "nginx", "replicas": "x"}`), fresh(`{"name": "a", "image": "nginx", "replicas": "x"}`); string(got) != string(want) {
		t.Errorf("schema error on hit:\ngot  %s\nwant %s", got, want)
	}
	if got := cached(a); string(got) != string(miss) {
		t.Errorf("hit after errors differs:\ngot  %s\nwant %s", got, miss)
	}
	// On a hit the files are not consulted.
	r := map[string]any{"cacheKey": key, "input": json.RawMessage(a)}
	if _, out := evalReq(t, r); string(out) != string(miss) {
		t.Errorf("hit without files: %s", out)
	}
}

func TestCacheLRU(t *testing.T) {
	for i := range cacheSize + 3 {
		r := webReq(`{"name": "a", "image": "nginx"}`)
		r["cacheKey"] = "lru-" + string(rune('a'+i))
		resp, out := evalReq(t, r)
		mustSucceed(t, resp, out)
	}
	if n := moduleCache.len(); n != cacheSize {
		t.Errorf("cache holds %d entries, want %d", n, cacheSize)
	}
	if moduleCache.get("lru-a") != nil {
		t.Errorf("oldest entry not evicted")
	}
}

func TestMalformedRequests(t *testing.T) {
	for name, req := range map[string]string{
		"not json":       `{"files": `,
		"input array":    `{"files": {"x.cue": "package x"}, "input": [1]}`,
		"input string":   `{"files": {"x.cue": "package x"}, "input": "x"}`,
		"input missing":  `{"files": {"x.cue": "package x"}}`,
		"input null":     `{"files": {"x.cue": "package x"}, "input": null}`,
		"bad file path":  `{"files": {"../x.cue": "package x"}, "input": {}}`,
		"abs file path":  `{"files": {"/x.cue": "package x"}, "input": {}}`,
		"bad dep":        `{"files": {"x.cue": "package x"}, "input": {}, "deps": [{"module": "example.com/p@v1", "version": "v0.1.0"}]}`,
		"bad package":    `{"files": {"x.cue": "package x"}, "input": {}, "package": "../up"}`,
		"no files":       `{"input": {}}`,
		"files not map":  `{"files": ["x.cue"], "input": {}}`,
		"empty document": ``,
	} {
		t.Run(name, func(t *testing.T) {
			resp, out := evalReq(t, req)
			mustFail(t, resp, out)
			if resp.Errors[0].Phase != PhaseInput {
				t.Errorf("want phase input: %s", out)
			}
		})
	}
}

func TestNonObjectInputErrorPath(t *testing.T) {
	resp, out := evalReq(t, `{"files": {"x.cue": "package x"}, "input": 3}`)
	mustFail(t, resp, out)
	if e := resp.Errors[0]; e.Phase != PhaseInput || e.Path != "input" || !strings.Contains(e.Message, "number") {
		t.Errorf("unexpected: %s", out)
	}
}

func TestPanicIsRecovered(t *testing.T) {
	// Corrupt the cache on purpose: a zero cue.Value makes FillPath panic.
	moduleCache.put("panic", &builtModule{})
	resp, out := evalReq(t, map[string]any{"cacheKey": "panic", "input": map[string]any{}})
	mustFail(t, resp, out)
	if e := resp.Errors[0]; e.Phase != PhaseEval || !strings.HasPrefix(e.Message, "guest panic:") {
		t.Errorf("unexpected: %s", out)
	}
	if moduleCache.get("panic") != nil {
		t.Errorf("panicking cache entry not evicted")
	}
}

func TestMissingPackageDir(t *testing.T) {
	resp, out := evalReq(t, map[string]any{
		"files":   map[string]string{"cue.mod/module.cue": webModule, "x.cue": "package x"},
		"package": "nothere",
		"input":   map[string]any{},
	})
	mustFail(t, resp, out)
	if e := resp.Errors[0]; e.Phase != PhaseLoad || e.Path != "package" {
		t.Errorf("unexpected: %s", out)
	}
}
